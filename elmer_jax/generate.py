"""`python -m elmer_jax.generate`, kept as it was: the command is
elmer_jax/commands/generate.py."""

from absl import flags

from elmer_jax.commands import generate

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(generate)

if __name__ == "__main__":
  generate.run()
