"""`python -m elmer_jax.export`, kept as it was: the command is
elmer_jax/commands/export.py."""

from absl import flags

from elmer_jax.commands import export

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(export)

if __name__ == "__main__":
  export.run()
