"""`python -m elmer_jax.data.train_vocab`, kept as it was: the command is
elmer_jax/commands/train_vocab.py."""

from absl import flags

from elmer_jax.commands import train_vocab

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(train_vocab)

if __name__ == "__main__":
  train_vocab.run()
