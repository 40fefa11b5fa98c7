"""`python -m elmer_jax.import_hf`, kept as it was: the command is
elmer_jax/commands/import_hf.py."""

from absl import flags

from elmer_jax.commands import import_hf

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(import_hf)

if __name__ == "__main__":
  import_hf.run()
