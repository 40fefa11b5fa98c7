"""`python -m elmer_jax.generate`, kept as it was: the command is
elmer_jax/commands/generate.py."""

from elmer_jax.commands import generate

if __name__ == "__main__":
  generate.run()
