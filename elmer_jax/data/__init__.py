"""Data: vocabularies, noising preprocessors, feature converter, tasks."""
