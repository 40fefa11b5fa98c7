"""`python -m elmer_jax.evaluate`, kept as it was: the command is
elmer_jax/commands/evaluate.py."""

from elmer_jax.commands import evaluate

if __name__ == "__main__":
  evaluate.run()
