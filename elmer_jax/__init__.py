"""elmer_jax: pretrain, fine-tune, decode and export ELMER in JAX/Flax."""
