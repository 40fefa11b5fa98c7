"""`python -m elmer_jax.import_hf`, kept as it was: the command is
elmer_jax/commands/import_hf.py."""

from elmer_jax.commands import import_hf

if __name__ == "__main__":
  import_hf.run()
