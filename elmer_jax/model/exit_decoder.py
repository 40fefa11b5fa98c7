"""The decoder at inference: early exit that saves the work of exited tokens.

The training decoder (decoder.py) runs every layer on every token and masks,
which gives the right loss and gradients but no speed. Here, with the same
semantics (a token leaves at the first layer whose off-ramp entropy is <= the
threshold, or at the last; later layers see its frozen state):

- the layers run one by one, each skipped once every real (non-padding) slot
  of the batch has exited: nothing changes after the last exit; with
  `eos_id`, a row also counts as finished once every slot up to its first
  exited `</s>` has exited, since the caller keeps only those (its output
  is decided; spare slots after the end need not wait for the last layer);
- a layer computes queries, cross-attention, the feed-forward and the
  off-ramp only for the tokens still running, gathered per row into the
  smallest of a few static capacities (all, 1/2, 1/4, 1/8 of the slots) that
  holds the row with most of them; keys and values come from every token's
  current or frozen state;
- the exit test reads max, sum(e^z) and sum(z e^z) of the off-ramp in one
  pass (entropy and argmax together), and a token's exit token is kept, so
  no off-ramp runs again at the end.

A chain of conditional layers rather than a `while_loop` over stacked
weights: slicing a layer out of a stacked array copies its weights at every
step on CPU, and stacking per-layer weights would copy them all per call.
"""

from typing import Any, Optional, Sequence, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import off_ramp
from elmer_jax.model.attention import MultiHeadAttention, padding_mask
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.embeddings import embed_inputs, token_embedder
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.normalization import layer_norm

# Capacities as fractions of the decoder slots, largest first.
CAPACITY_FRACTIONS = (1, 2, 4, 8)


@flax.struct.dataclass
class ExitDecodeOutput:
  """`tokens`, `exit_layers`: (batch, length) int32, each slot's token and
  the layer it left at (padding slots: the last layer). `layers_run`: ()
  decoder layers the batch executed. `slot_passes`: () slot-layers computed,
  capacity padding included (at most layers x batch x length)."""

  tokens: jax.Array
  exit_layers: jax.Array
  layers_run: jax.Array
  slot_passes: jax.Array


class _DecoderEmbedding(nn.Module):
  """The decoder's input embedding, under the training decoder's names."""

  config: ElmerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    return embed_inputs(self.config, token_embedder(self.config), tokens,
                        None, True)


class _PendingLayer(nn.Module):
  """One decoder layer (parameter names of decoder.DecoderLayer) for the
  gathered running tokens, attending to every token's state."""

  config: ElmerConfig

  @nn.compact
  def __call__(self, running: jax.Array, every: jax.Array,
               encoded: jax.Array, self_mask: jax.Array,
               cross_mask: jax.Array) -> jax.Array:
    cfg = self.config
    norm = lambda name, x: layer_norm(cfg, name)(x)
    update = MultiHeadAttention(cfg, name="self_attn")(running, every,
                                                       self_mask)
    hidden = norm("self_attn_layer_norm", running + update)
    update = MultiHeadAttention(cfg, name="encoder_attn")(hidden, encoded,
                                                          cross_mask)
    hidden = norm("encoder_attn_layer_norm", hidden + update)
    return norm("final_layer_norm", hidden + FeedForward(cfg, name="ffn")(
        hidden))


def layer_params(config: ElmerConfig, params: Any, index: int) -> Any:
  """Decoder layer `index`'s parameters, per-layer or scanned layout."""
  decoder = params["decoder"]
  if config.scan_layers:
    return jax.tree.map(lambda x: x[index], decoder["layers"])
  return decoder[f"layers_{index}"]


def capacities(length: int,
               fractions: Sequence[int] = CAPACITY_FRACTIONS) -> list[int]:
  """Distinct static capacities (slots per row), largest first."""
  return sorted({max(1, -(-length // f)) for f in fractions}, reverse=True)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) *
                                              (x.ndim - 2)), axis=1)


def decided_rows(tokens: jax.Array, done: jax.Array, real: jax.Array,
                 eos_id: int) -> jax.Array:
  """(batch,) rows with an exited `</s>` before their first running slot."""
  ended = done & real & (tokens == eos_id)
  nothing_running_yet = jnp.cumsum(~done, axis=1) == 0
  return jnp.any(ended & nothing_running_yet, axis=1)


def decode(config: ElmerConfig, params: Any, encoder_input_tokens: jax.Array,
           decoder_input_tokens: jax.Array,
           exit_threshold: Union[float, jax.Array],
           fractions: Sequence[int] = CAPACITY_FRACTIONS,
           eos_id: Optional[int] = None) -> ExitDecodeOutput:
  """Each slot's token and exit layer. `exit_threshold` (nats; 0: off, every
  token leaves at the last layer): a Python 0 also drops the exit tests from
  the program; an array compiles one program for every threshold. With
  `eos_id` (for callers that cut at the first `</s>`), the slots of a row
  after its first exited `</s>` stop once every slot before it has exited:
  they keep token 0 and the last layer, and what is kept is unchanged."""
  from elmer_jax.model.elmer import Elmer  # elmer.py imports the decoder.
  cfg, layers = config, config.decoder_layers
  variables = {"params": params}
  encoded = Elmer(cfg).apply(variables, encoder_input_tokens,
                             method=Elmer.encode)
  decoder = params["decoder"]
  hidden = _DecoderEmbedding(cfg).apply({"params": {
      "shared": params["shared"],
      "embed_positions": decoder["embed_positions"],
      "layernorm_embedding": decoder["layernorm_embedding"]}},
                                        decoder_input_tokens)
  weights = off_ramp.OffRampWeights(params["shared"]["embedding"],
                                    params["final_logits_bias"],
                                    params.get("concat_head"))
  self_mask = padding_mask(decoder_input_tokens, cfg.pad_id)
  cross_mask = padding_mask(encoder_input_tokens, cfg.pad_id)
  batch, length = decoder_input_tokens.shape
  sizes = capacities(length, fractions)
  rows = jnp.arange(batch)[:, None]
  early = off_ramp.exits_early(exit_threshold)

  def run_layer(index: int, capacity: int, state):
    hidden, tokens, exits, done, passes = state
    pending = ~done
    if capacity == length:
      slot = jnp.broadcast_to(jnp.arange(length), (batch, length))
    else:
      slot = jnp.argsort(done, axis=1, stable=True)[:, :capacity]
    running = _gather(pending, slot)
    states = _PendingLayer(cfg).apply(
        {"params": layer_params(cfg, params, index)}, _gather(hidden, slot),
        hidden, encoded, self_mask, cross_mask)
    last = index == layers - 1
    if not (last or early or cfg.soft_exit):
      return (hidden.at[rows, slot].set(jnp.where(running[..., None], states,
                                                  _gather(hidden, slot))),
              tokens, exits, done, passes + batch * capacity)
    entropy, argmax = off_ramp.entropy_and_argmax(cfg, weights, states)
    if early:
      leave = running & (last | off_ramp.confident(entropy, exit_threshold))
    else:
      leave = running & last
    if cfg.soft_exit:
      states = off_ramp.feed_back(cfg, weights, states, argmax)
    states = jnp.where(running[..., None], states, _gather(hidden, slot))
    put = lambda x, new: x.at[rows, slot].set(
        jnp.where(leave, new, _gather(x, slot)))
    return (hidden.at[rows, slot].set(states), put(tokens, argmax),
            put(exits, jnp.full_like(slot, index)), put(done, True),
            passes + batch * capacity)

  real = decoder_input_tokens != cfg.pad_id
  state = (hidden, jnp.zeros((batch, length), jnp.int32),
           jnp.full((batch, length), layers - 1, jnp.int32), ~real,
           jnp.zeros((), jnp.int32))
  layers_run = jnp.zeros((), jnp.int32)
  for index in range(layers):
    if eos_id is not None and index > 0:
      hidden, tokens, exits, done, passes = state
      done |= decided_rows(tokens, done, real, eos_id)[:, None]
      state = (hidden, tokens, exits, done, passes)
    most = jnp.max(jnp.sum(~state[3], axis=1))
    branch = jnp.sum(jnp.asarray(sizes[1:]) >= most)
    branches = [lambda s, c=c, i=index: run_layer(i, c, s) for c in sizes]
    state = jax.lax.cond(most > 0, lambda s: jax.lax.switch(branch, branches,
                                                            s),
                         lambda s: s, state)
    layers_run += (most > 0).astype(jnp.int32)
  _, tokens, exits, _, passes = state
  return ExitDecodeOutput(tokens=tokens, exit_layers=exits,
                          layers_run=layers_run, slot_passes=passes)
