"""Bundled data and the scripts that build it."""
