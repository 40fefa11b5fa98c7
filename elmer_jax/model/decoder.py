"""The ELMER decoder: bidirectional BART decoder layers with copy-on-exit.

Every token carries an exit layer e. After layer l the decoder keeps
`cache = where(e == l, h, cache)` (the state the token's off-ramp reads) and
feeds `where(e <= l, stop_gradient(cache), h)` to layer l + 1, so a token that
has exited re-enters later layers frozen: later tokens still attend to it, but
no gradient flows back into it through them. All layers always run (no
data-dependent break), which gives the same loss and gradients as stopping.

Exit layers travel in the layer carry, so a layer can also move a token's exit
to itself when its off-ramp is confident (entropy early exit at inference).
Under soft exit the state fed upward passes through `concat_head` with the
embedding of the layer's predicted token (see off_ramp.py); an exited token's
frozen state is fed the same way, so later layers see one fixed input for it.
"""

from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import off_ramp
from elmer_jax.model.attention import MultiHeadAttention
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.embeddings import embed_inputs
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.layer_stack import run_layers
from elmer_jax.model.normalization import add_and_norm

HIDDEN_AXES = ("batch", "length", "embed")


def copy_on_exit(hidden: jax.Array, cache: jax.Array, exit_layers: jax.Array,
                 layer_index: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns (next layer's input, exit-state cache) after `layer_index`."""
  cache = jnp.where((exit_layers == layer_index)[..., None], hidden, cache)
  hidden = jnp.where((exit_layers <= layer_index)[..., None],
                     jax.lax.stop_gradient(cache), hidden)
  return hidden, cache


@flax.struct.dataclass
class LayerInputs:
  """What every decoder layer reads besides its carry: one pytree, passed by
  name, that the layer stack broadcasts to every layer (scanned or not).
  `exit_threshold` (None: off) turns on entropy early exit; `gold_tokens` are
  mixed into the soft-exit feedback."""

  encoded: jax.Array
  self_mask: jax.Array
  cross_mask: jax.Array
  weights: off_ramp.OffRampWeights
  gold_tokens: Optional[jax.Array] = None
  exit_threshold: Optional[jax.Array] = None


class DecoderLayer(nn.Module):
  """One BART decoder layer (no causal mask), copy-on-exit, and what the
  off-ramp decides between layers (entropy exit, soft-exit feedback).

  Carry: (next layer's input, exit-state cache, exit layers). Output: this
  layer's off-ramp logits after copy-on-exit if `collect_logits`, else None.
  """

  config: ElmerConfig
  deterministic: bool = True
  collect_logits: bool = False
  gold_mix_rate: float = 0.0

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array, jax.Array],
               layer_index: jax.Array, inputs: LayerInputs):
    cfg, det = self.config, self.deterministic
    hidden, cache, exit_layers = carry
    update = MultiHeadAttention(cfg, det, name="self_attn")(hidden, hidden,
                                                           inputs.self_mask)
    hidden = add_and_norm(cfg, hidden, update, det, "self_attn_layer_norm")
    update = MultiHeadAttention(cfg, det, name="encoder_attn")(
        hidden, inputs.encoded, inputs.cross_mask)
    hidden = add_and_norm(cfg, hidden, update, det, "encoder_attn_layer_norm")
    update = FeedForward(cfg, det, name="ffn")(hidden)
    hidden = add_and_norm(cfg, hidden, update, det, "final_layer_norm")
    # A zero perturbation: lets tests and analyses take d(loss)/d(layer output).
    hidden = self.perturb("output", hidden)
    hidden, cache = copy_on_exit(hidden, cache, exit_layers, layer_index)
    logits = None
    entropy_exit = inputs.exit_threshold is not None
    if cfg.soft_exit or entropy_exit or self.collect_logits:
      # Each token's own state after the copy (an exited token shows its exit
      # logits), with its gradient: the stop-gradient is only for what later
      # layers read, so the loss at a token's exit layer still trains it.
      state = jnp.where((exit_layers <= layer_index)[..., None], cache, hidden)
      logits = off_ramp.logits(cfg, inputs.weights, state)
    if entropy_exit:
      # A token still running has the same state before and after the copy,
      # so deciding on post-copy logits and copying again is exact.
      exit_layers = off_ramp.exit_by_entropy(logits, exit_layers, layer_index,
                                             inputs.exit_threshold)
      hidden, cache = copy_on_exit(hidden, cache, exit_layers, layer_index)
    if cfg.soft_exit:
      tokens = jnp.argmax(logits, axis=-1)
      if inputs.gold_tokens is not None:
        mixing = 0.0 < self.gold_mix_rate < 1.0
        tokens = off_ramp.mix_gold(
            tokens, inputs.gold_tokens, self.gold_mix_rate,
            self.make_rng(off_ramp.GOLD_MIX_RNG) if mixing else None)
      hidden = off_ramp.feed_back(cfg, inputs.weights, hidden, tokens)
    hidden = nn.with_logical_constraint(hidden, HIDDEN_AXES)
    cache = nn.with_logical_constraint(cache, HIDDEN_AXES)
    return ((hidden, cache, exit_layers),
            logits if self.collect_logits else None)


class Decoder(nn.Module):
  """Returns (exit states, exit layers, per-layer logits if `collect_logits`).

  Entropy early exit (`LayerInputs.exit_threshold`) moves exits below the
  given exit layers; gold tokens enter the soft-exit feedback at
  `gold_mix_rate` (rng stream `off_ramp.GOLD_MIX_RNG`).
  """

  config: ElmerConfig
  shared: nn.Embed

  @nn.compact
  def __call__(self, tokens: jax.Array, exit_layers: jax.Array,
               inputs: LayerInputs, positions: Optional[jax.Array] = None,
               deterministic: bool = True, collect_logits: bool = False,
               gold_mix_rate: float = 0.0
               ) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    hidden = embed_inputs(self.config, self.shared, tokens, positions,
                          deterministic)
    carry = (hidden, jnp.zeros_like(hidden), exit_layers)
    (_, cache, exit_layers), layer_logits = self.run_stack(
        carry, inputs, deterministic, collect_logits, gold_mix_rate)
    return cache, exit_layers, layer_logits

  def run_stack(self, carry: tuple[jax.Array, jax.Array, jax.Array],
                inputs: LayerInputs, deterministic: bool,
                collect_logits: bool, gold_mix_rate: float
                ) -> tuple[Any, Optional[jax.Array]]:
    """(final carry, stacked per-layer logits or None); called from
    `__call__` (its layers are children of the compact method)."""
    return run_layers(
        DecoderLayer, self.config, self.config.decoder_layers, deterministic,
        carry, (inputs,), collect_logits=collect_logits,
        gold_mix_rate=gold_mix_rate)
