"""`python -m elmer_jax.export.hf_generate`, kept as it was: the command is
elmer_jax/commands/hf_generate.py."""

from absl import flags

from elmer_jax.commands import hf_generate

# `--help` lists the flags of the module run, this one.
flags.adopt_module_key_flags(hf_generate)

if __name__ == "__main__":
  hf_generate.run()
