"""Training-time decoder layers that spend no work on exited tokens.

With copy-on-exit, a token whose exit layer e is below layer l enters layer l
frozen (`stop_gradient` of its exit state) and leaves it unchanged: the dense
decoder computes its queries, cross-attention and feed-forward only to throw
them away. Here layer l gathers the tokens still running (e >= l), at most
`capacity[l]` per row (a static shape), runs queries, cross-attention and the
feed-forward on them alone, and writes them back; keys and values still come
from every token's current or frozen state. The loss and gradients equal the
dense path's (the discarded work had zero gradient). Dropout masks are drawn
for the executed tokens only, so with dropout on the two paths draw different
bits from the same distribution.

`permutation` exit sampling (objectives.sample_exit_layers) gives each
sequence a known number of tokens per exit layer, which bounds the running
tokens per row: `running_capacity`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model.attention import MultiHeadAttention
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.decoder import (HIDDEN_AXES, Decoder, LayerInputs,
                                     copy_on_exit)
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.layer_stack import remat
from elmer_jax.model.normalization import add_and_norm


def running_capacity(num_tokens: int, num_layers: int,
                     segments: int = 2) -> tuple[int, ...]:
  """Per layer l, the most tokens of a row with exit >= l under `permutation`
  sampling of `segments` independently balanced sequences per row.

  A sequence of n = qL + r tokens puts q or q + 1 tokens on each layer, the
  extra ones on r cyclically consecutive layers, so at most
  q(L - l) + min(r, L - l) <= n(L - l)/L + l(L - l)/L of them reach layer l.
  Unpacked rows are two sequences: the weighted tokens and the rest.
  """
  L, T = num_layers, num_tokens
  return tuple(min(T, (T * (L - l) + segments * l * (L - l)) // L)
               for l in range(L))


def _pick(x: jax.Array, order: jax.Array, axis: int) -> jax.Array:
  """Rows `order` (batch, capacity) of `x` along `axis` (per batch row)."""
  shape = [1] * x.ndim
  shape[0], shape[axis] = order.shape
  index = order.reshape(shape)
  return jnp.take_along_axis(x, index, axis=axis)


def _pick_queries(mask: jax.Array, order: jax.Array) -> jax.Array:
  """A (batch, 1, queries or 1, keys) mask restricted to the picked queries."""
  return mask if mask.shape[2] == 1 else _pick(mask, order, 2)


class RunningTokensLayer(nn.Module):
  """DecoderLayer (same parameter names) for LPLM training, on the tokens
  that have not exited, at most `capacity` per row."""

  config: ElmerConfig
  capacity: int
  deterministic: bool = True

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array, jax.Array],
               layer_index: int, encoded: jax.Array, self_mask: jax.Array,
               cross_mask: jax.Array):
    cfg, det = self.config, self.deterministic
    hidden, cache, exit_layers = carry
    running = exit_layers >= layer_index
    # Running tokens first, in position order; the first `capacity` of them.
    order = jnp.argsort(~running, axis=-1, stable=True)[:, :self.capacity]
    picked = _pick(hidden, order, 1)
    update = MultiHeadAttention(cfg, det, name="self_attn")(
        picked, hidden, _pick_queries(self_mask, order))
    out = add_and_norm(cfg, picked, update, det, "self_attn_layer_norm")
    update = MultiHeadAttention(cfg, det, name="encoder_attn")(
        out, encoded, _pick_queries(cross_mask, order))
    out = add_and_norm(cfg, out, update, det, "encoder_attn_layer_norm")
    update = FeedForward(cfg, det, name="ffn")(out)
    out = add_and_norm(cfg, out, update, det, "final_layer_norm")
    # Picked slots beyond a row's running tokens hold exited ones: keep them.
    out = jnp.where(_pick(running, order, 1)[..., None], out, picked)
    rows = jnp.arange(hidden.shape[0])[:, None]
    hidden = hidden.at[rows, order].set(out.astype(hidden.dtype),
                                        unique_indices=True)
    hidden, cache = copy_on_exit(hidden, cache, exit_layers, layer_index)
    hidden = nn.with_logical_constraint(hidden, HIDDEN_AXES)
    cache = nn.with_logical_constraint(cache, HIDDEN_AXES)
    return (hidden, cache, exit_layers), None


class RunningTokensDecoder(Decoder):
  """The Decoder (same parameters) with `RunningTokensLayer`s, for LPLM
  training: returns (exit states, exit layers, None). Per-layer stacks only;
  no soft exit, entropy exit or per-layer logits."""

  capacity: tuple[int, ...] = ()

  def run_stack(self, carry: tuple[jax.Array, jax.Array, jax.Array],
                inputs: LayerInputs, deterministic: bool,
                collect_logits: bool, gold_mix_rate: float
                ) -> tuple[Any, None]:
    del gold_mix_rate
    cfg = self.config
    if cfg.scan_layers:
      raise ValueError("Skipping exited tokens gives every layer its own "
                       "token count, which a scanned stack cannot hold; set "
                       "ElmerConfig.scan_layers=False.")
    if (cfg.soft_exit or collect_logits or inputs.gold_tokens is not None
        or inputs.exit_threshold is not None):
      raise ValueError("Skipping exited tokens is for LPLM training: no soft "
                       "exit, per-layer logits or entropy exit.")
    if len(self.capacity) != cfg.decoder_layers:
      raise ValueError(f"running_capacity has {len(self.capacity)} entries; "
                       f"the decoder has {cfg.decoder_layers} layers.")
    layer = remat(RunningTokensLayer, cfg)
    for i, size in enumerate(self.capacity):
      carry, _ = layer(cfg, size, deterministic, name=f"layers_{i}")(
          carry, i, inputs.encoded, inputs.self_mask, inputs.cross_mask)
    return carry, None
