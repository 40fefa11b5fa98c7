"""ElmerConfig: the numbers that define an ELMER model, and its presets.

A frozen dataclass so it can be hashed into jit caches and bound from gin at
the entry points (`gin_configs/models/*.gin`) without the library importing gin.
"""

import dataclasses
import jax.numpy as jnp

# Remat policies by name: names are what gin files and flags carry.
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims")
# `plain`: einsums with attention dropout; `xla`, `cudnn`:
# jax.nn.dot_product_attention with that implementation (no attention dropout).
ATTENTION_IMPLS = ("plain", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ElmerConfig:
  """Shape, special ids and numerics of an ELMER (BART-shaped) model."""

  vocab_size: int = 50265
  d_model: int = 768
  num_heads: int = 12
  d_ff: int = 3072
  encoder_layers: int = 6
  decoder_layers: int = 6
  max_positions: int = 1024
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  activation_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-5
  init_std: float = 0.02
  pad_id: int = 1
  bos_id: int = 0
  eos_id: int = 2
  unk_id: int = 3
  mask_id: int = 50264
  # Fine-tuned ELMER as released: each layer after the first also reads the
  # previous layer's predicted token, through `concat_head` (see off_ramp.py).
  soft_exit: bool = False
  # Numerics and memory layout; none of these change the function computed.
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "none"
  attention_impl: str = "plain"
  # One matmul for q/k/v (k/v in cross-attention), kernels concatenated at
  # compute time: the parameters stay q_proj, k_proj, v_proj.
  fused_qkv: bool = False

  def __post_init__(self):
    if self.d_model % self.num_heads:
      raise ValueError(
          f"ElmerConfig.d_model={self.d_model} must be divisible by "
          f"ElmerConfig.num_heads={self.num_heads}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f"ElmerConfig.remat_policy={self.remat_policy!r}; expected one of "
          f"{REMAT_POLICIES}.")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(
          f"ElmerConfig.attention_impl={self.attention_impl!r}; expected one "
          f"of {ATTENTION_IMPLS}.")
    for name in ("pad_id", "bos_id", "eos_id", "unk_id", "mask_id"):
      value = getattr(self, name)
      if not 0 <= value < self.vocab_size:
        raise ValueError(
            f"ElmerConfig.{name}={value} is outside the vocabulary "
            f"[0, {self.vocab_size}).")
    for name in ("encoder_layers", "decoder_layers", "max_positions"):
      if getattr(self, name) < 1:
        raise ValueError(f"ElmerConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}.")
    jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> "ElmerConfig":
    return dataclasses.replace(self, **changes)

