"""`python -m elmer_jax.export`, kept as it was: the command is
elmer_jax/commands/export.py."""

from elmer_jax.commands import export

if __name__ == "__main__":
  export.run()
