"""The entry points: each module defines its absl flags and passes their
values to library functions as plain arguments.

No library module imports this package, and importing a library module
defines no flag (tests/test_import_graph.py). The old `python -m` names
(`elmer_jax.train`, `elmer_jax.export`, ...) forward here.
"""
