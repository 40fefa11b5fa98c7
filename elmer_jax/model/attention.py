"""BART multi-head attention and the masks ELMER uses.

ELMER's decoder self-attention is bidirectional, so every mask here is a
padding (or packing-segment) mask; there is no causal mask anywhere.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import initializers
from elmer_jax.model.config import ElmerConfig


def padding_mask(key_tokens: jax.Array, pad_id: int) -> jax.Array:
  """(batch, 1, 1, keys) mask: every query attends to every non-pad key."""
  return (key_tokens != pad_id)[:, None, None, :]


def segment_mask(query_segments: jax.Array,
                 key_segments: jax.Array) -> jax.Array:
  """(batch, 1, queries, keys) mask for packed rows: same segment, not pad (0)."""
  same = query_segments[:, :, None] == key_segments[:, None, :]
  return (same & (key_segments[:, None, :] > 0))[:, None, :, :]


def attention_mask(query_tokens: jax.Array, key_tokens: jax.Array,
                   pad_id: int, query_segments: Optional[jax.Array],
                   key_segments: Optional[jax.Array]) -> jax.Array:
  """Segment mask when the batch is packed, else a key padding mask."""
  if query_segments is None and key_segments is None:
    return padding_mask(key_tokens, pad_id)
  if query_segments is None or key_segments is None:
    raise ValueError("Packed inputs need segment ids on both the encoder and "
                     "the decoder side; got them on one side only.")
  return segment_mask(query_segments, key_segments)


class Projection(nn.Module):
  """x @ kernel + bias over named multi-dimensional axes.

  Written out rather than nn.DenseGeneral: DenseGeneral initialises a flat 2-D
  kernel and reshapes it, and flax's shape check replays that init under the
  logical-axis rules, applying the 3-axis sharding to the 2-D array.
  """

  config: ElmerConfig
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]
  out_shape: tuple[int, ...]

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    cfg = self.config
    n_in = len(self.in_axes)
    in_shape = inputs.shape[-n_in:]
    kernel = self.param(
        "kernel",
        initializers.normal(cfg.init_std, self.in_axes + self.out_axes),
        in_shape + self.out_shape, cfg.weight_dtype)
    bias = self.param("bias", initializers.zeros(self.out_axes),
                      self.out_shape, cfg.weight_dtype)
    dtype = cfg.compute_dtype
    contract = tuple(range(inputs.ndim - n_in, inputs.ndim))
    out = jax.lax.dot_general(inputs.astype(dtype), kernel.astype(dtype),
                              ((contract, tuple(range(n_in))), ((), ())))
    return out + bias.astype(dtype)


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention with BART's biased q/k/v/out projections."""

  config: ElmerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array,
               mask: jax.Array) -> jax.Array:
    cfg = self.config
    head_axes = ("batch", "length", "heads", "kv")

    def project(name: str) -> Projection:
      return Projection(cfg, ("embed",), ("heads", "kv"),
                        (cfg.num_heads, cfg.head_dim), name=name)

    query = nn.with_logical_constraint(project("q_proj")(inputs_q), head_axes)
    key = nn.with_logical_constraint(project("k_proj")(inputs_kv), head_axes)
    value = nn.with_logical_constraint(project("v_proj")(inputs_kv), head_axes)

    query = query * jnp.asarray(cfg.head_dim**-0.5, query.dtype)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                        preferred_element_type=jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    weights = nn.Dropout(cfg.attention_dropout_rate)(
        weights, deterministic=self.deterministic)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    context = nn.with_logical_constraint(context, head_axes)
    return Projection(cfg, ("heads", "kv"), ("embed",), (cfg.d_model,),
                      name="out_proj")(context)
