"""`python -m elmer_jax.evaluate`, kept as it was: the command is
elmer_jax/commands/evaluate.py."""

from absl import flags

from elmer_jax.commands import evaluate

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(evaluate)

if __name__ == "__main__":
  evaluate.run()
