"""`python -m elmer_jax.train`, kept as it was: the command is
elmer_jax/commands/train.py."""

from elmer_jax.commands import train

if __name__ == "__main__":
  train.run()
