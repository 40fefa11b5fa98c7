"""BART multi-head attention and the masks ELMER uses.

ELMER's decoder self-attention is bidirectional, so every mask here is a
padding (or packing-segment) mask; there is no causal mask anywhere.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import initializers, matmul
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.dropout import Dropout


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
  logical-axis rules, applying the 3-axis sharding to the 2-D array. Built in
  `setup` so that a fused projection can read the weights without applying
  them (`weights`).
  """

  config: ElmerConfig
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]

  def setup(self):
    cfg = self.config
    self.kernel = self.param(
        "kernel",
        initializers.normal(cfg.init_std, self.in_axes + self.out_axes),
        self.in_shape + self.out_shape, cfg.weight_dtype)
    self.bias = self.param("bias", initializers.zeros(self.out_axes),
                           self.out_shape, cfg.weight_dtype)

  def weights(self) -> tuple[jax.Array, jax.Array]:
    return self.kernel, self.bias

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return project(self.config, inputs, self.kernel, self.bias,
                   len(self.in_axes))


def project(config: ElmerConfig, inputs: jax.Array, kernel: jax.Array,
            bias: jax.Array, n_in: int) -> jax.Array:
  """inputs @ kernel + bias, contracting the last `n_in` axes of `inputs`
  with the first `n_in` of `kernel`, in the compute dtype."""
  dtype = config.compute_dtype
  contract = tuple(range(inputs.ndim - n_in, inputs.ndim))
  out = matmul.dot_general(inputs.astype(dtype), kernel.astype(dtype),
                           ((contract, tuple(range(n_in))), ((), ())))
  return out + bias.astype(dtype)


def fused_project(config: ElmerConfig, inputs: jax.Array,
                  projections: Sequence[Projection]) -> list[jax.Array]:
  """Several (embed -> heads, kv) projections of the same inputs as one
  matmul over their kernels concatenated on the heads axis (a compute-time
  concatenation: the parameters stay separate)."""
  kernels, biases = zip(*(p.weights() for p in projections))
  out = project(config, inputs, jnp.concatenate(kernels, axis=1),
                jnp.concatenate(biases, axis=0), 1)
  return jnp.split(out, len(projections), axis=-2)


def plain_attention(cfg: ElmerConfig, query, key, value, mask,
                    dropout: nn.Module) -> jax.Array:
  query = query * jnp.asarray(cfg.head_dim**-0.5, query.dtype)
  scores = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                      preferred_element_type=jnp.float32)
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
  return matmul.einsum("bhqk,bkhd->bqhd", dropout(weights), value)


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention with BART's biased q/k/v/out projections.

  `ElmerConfig.attention_impl`: `plain` (einsums, attention dropout) or
  `xla` / `cudnn` (`jax.nn.dot_product_attention`; cuDNN flash attention
  needs a GPU and bf16/fp16), which has no attention dropout.
  `ElmerConfig.fused_qkv`: one matmul for q, k and v (self-attention) or k and
  v (cross-attention), over kernels concatenated at compute time.
  """

  config: ElmerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array,
               mask: jax.Array) -> jax.Array:
    cfg = self.config
    head_axes = ("batch", "length", "heads", "kv")
    q_proj, k_proj, v_proj = (
        Projection(cfg, ("embed",), ("heads", "kv"), (cfg.d_model,),
                   (cfg.num_heads, cfg.head_dim), name=name)
        for name in ("q_proj", "k_proj", "v_proj"))
    if not cfg.fused_qkv:
      query, key, value = q_proj(inputs_q), k_proj(inputs_kv), v_proj(inputs_kv)
    elif inputs_q is inputs_kv:
      query, key, value = fused_project(cfg, inputs_q, (q_proj, k_proj, v_proj))
    else:
      query = q_proj(inputs_q)
      key, value = fused_project(cfg, inputs_kv, (k_proj, v_proj))
    query, key, value = (nn.with_logical_constraint(x, head_axes)
                         for x in (query, key, value))
    dropout = Dropout(cfg.attention_dropout_rate)
    if cfg.attention_impl == "plain":
      context = plain_attention(
          cfg, query, key, value, mask,
          lambda w: dropout(w, deterministic=self.deterministic))
    else:
      if not self.deterministic and cfg.attention_dropout_rate > 0:
        raise ValueError(
            f"ElmerConfig.attention_impl={cfg.attention_impl!r} "
            "(jax.nn.dot_product_attention) has no attention dropout, but "
            f"ElmerConfig.attention_dropout_rate={cfg.attention_dropout_rate} "
            "in training; set it to 0.0 or use attention_impl='plain'.")
      context = jax.nn.dot_product_attention(
          query, key, value, mask=jnp.broadcast_to(
              mask, mask.shape[:2] + (query.shape[1], key.shape[1])),
          implementation=cfg.attention_impl)
    context = nn.with_logical_constraint(context, head_axes)
    return Projection(cfg, ("heads", "kv"), ("embed",),
                      (cfg.num_heads, cfg.head_dim), (cfg.d_model,),
                      name="out_proj")(context)
