"""`python -m elmer_jax.train`, kept as it was: the command is
elmer_jax/commands/train.py."""

from absl import flags

from elmer_jax.commands import train

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(train)

if __name__ == "__main__":
  train.run()
