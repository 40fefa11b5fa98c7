"""Shared test fixtures: tiny configs and random Hugging Face BART references."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np
import pytest

from elmer_jax.model.config import ElmerConfig

# Parity is about semantics, checked in true fp32: on GPUs JAX's default f32
# matmul uses TF32 (about 1e-3 off). A no-op on CPU.
jax.config.update("jax_default_matmul_precision", "highest")

TINY = ElmerConfig(vocab_size=96, d_model=32, num_heads=4, d_ff=64,
                   encoder_layers=2, decoder_layers=4, max_positions=40,
                   mask_id=95)


@pytest.fixture
def tiny_config() -> ElmerConfig:
  return TINY


def random_tokens(rng: np.random.Generator, config: ElmerConfig, batch: int,
                  length: int) -> np.ndarray:
  """Token ids that avoid the special ids 0..3."""
  return rng.integers(4, config.vocab_size, (batch, length)).astype(np.int32)
