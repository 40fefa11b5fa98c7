"""Conversion between elmer_jax checkpoints and Hugging Face BART/ELMER."""
