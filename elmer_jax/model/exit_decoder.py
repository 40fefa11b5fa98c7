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
  off-ramp only for the tokens still running, gathered from the whole batch
  into the smallest of a few static capacities (all, 1/2, 1/4, 1/8 of the
  batch's slots) that holds them; keys and values are projected once per row
  from every token's current or frozen state, and each gathered query reads
  its own row's;
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
from elmer_jax.model.attention import (MultiHeadAttention, Projection,
                                      plain_attention)
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.embeddings import embed_inputs, token_embedder
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.normalization import layer_norm
from elmer_jax.model.row_blocks import map_row_blocks

# Capacities as fractions of the decoder slots, largest first.
CAPACITY_FRACTIONS = (1, 2, 4, 8)
# Key and value elements gathered for one block of queries (4 MiB in fp32).
GATHER_BLOCK = 1 << 20


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


class _GatheredAttention(nn.Module):
  """MultiHeadAttention (its parameter names and plain math) for queries
  gathered from several rows: keys and values are projected once per row,
  then each query attends to the keys of its own row."""

  config: ElmerConfig

  @nn.compact
  def __call__(self, queries: jax.Array, rows: jax.Array, inputs_kv: jax.Array,
               key_mask: jax.Array) -> jax.Array:
    """queries (n, embed) of rows `rows` (n,); inputs_kv (batch, keys, embed);
    key_mask (batch, keys)."""
    cfg = self.config
    heads = lambda name: Projection(cfg, ("embed",), ("heads", "kv"),
                                    (cfg.d_model,),
                                    (cfg.num_heads, cfg.head_dim), name=name)
    query = heads("q_proj")(queries)
    key, value = heads("k_proj")(inputs_kv), heads("v_proj")(inputs_kv)

    def attend(query, rows):  # Each query as a row of one query.
      take = lambda x: jnp.take(x, rows, axis=0)
      return (plain_attention(cfg, query[:, None], take(key), take(value),
                               take(key_mask)[:, None, None, :],
                               lambda w: w)[:, 0],)

    # Each query's copy of its row's keys and values: bounded per block.
    context, = map_row_blocks(attend, GATHER_BLOCK // key[0].size, query,
                              rows)
    return Projection(cfg, ("heads", "kv"), ("embed",),
                      (cfg.num_heads, cfg.head_dim), (cfg.d_model,),
                      name="out_proj")(context)


class _PendingLayer(nn.Module):
  """One decoder layer (parameter names of decoder.DecoderLayer) for running
  tokens, attending to every token's state: all slots (`rows` None: hidden
  (batch, length, embed)) or tokens gathered from the batch (hidden (n,
  embed) of rows `rows`)."""

  config: ElmerConfig

  @nn.compact
  def __call__(self, running: jax.Array, rows: Optional[jax.Array],
               every: jax.Array, encoded: jax.Array, self_keys: jax.Array,
               cross_keys: jax.Array) -> jax.Array:
    cfg = self.config
    norm = lambda name, x: layer_norm(cfg, name)(x)
    if rows is None:
      attend = lambda name, x, kv, keys: MultiHeadAttention(cfg, name=name)(
          x, kv, keys[:, None, None, :])
    else:
      attend = lambda name, x, kv, keys: _GatheredAttention(cfg, name=name)(
          x, rows, kv, keys)
    update = attend("self_attn", running, every, self_keys)
    hidden = norm("self_attn_layer_norm", running + update)
    update = attend("encoder_attn", hidden, encoded, cross_keys)
    hidden = norm("encoder_attn_layer_norm", hidden + update)
    return norm("final_layer_norm", hidden + FeedForward(cfg, name="ffn")(
        hidden))


def layer_params(config: ElmerConfig, params: Any, index: int) -> Any:
  """Decoder layer `index`'s parameters, per-layer or scanned layout."""
  decoder = params["decoder"]
  if config.scan_layers:
    return jax.tree.map(lambda x: x[index], decoder["layers"])
  return decoder[f"layers_{index}"]


def capacities(slots: int,
               fractions: Sequence[int] = CAPACITY_FRACTIONS) -> list[int]:
  """Distinct static capacities (slots of the batch), largest first."""
  return sorted({max(1, -(-slots // f)) for f in fractions}, reverse=True)


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
  self_keys = decoder_input_tokens != cfg.pad_id
  cross_keys = encoder_input_tokens != cfg.pad_id
  batch, length = decoder_input_tokens.shape
  slots = batch * length
  sizes = capacities(slots, fractions)
  early = off_ramp.exits_early(exit_threshold)

  def run_layer(index: int, capacity: int, state):
    """Layer `index` on the running tokens in `capacity` gathered slots;
    the state's arrays are flat over the batch's slots."""
    hidden, tokens, exits, done, passes = state
    grid = hidden.reshape(batch, length, -1)
    layer = {"params": layer_params(cfg, params, index)}
    if capacity == slots:
      slot, running = None, ~done
      states = _PendingLayer(cfg).apply(layer, grid, None, grid, encoded,
                                        self_keys, cross_keys)
      states = states.reshape(slots, -1)
    else:
      slot = jnp.argsort(done, stable=True)[:capacity]
      running = ~done[slot]
      states = _PendingLayer(cfg).apply(layer, hidden[slot], slot // length,
                                        grid, encoded, self_keys, cross_keys)
    # Writes `new` where `keep` into the slots the layer ran.
    put = lambda x, new, keep: (jnp.where(keep, new, x) if slot is None else
                                x.at[slot].set(jnp.where(keep, new, x[slot])))
    last = index == layers - 1
    passes = passes + capacity
    if not (last or early or cfg.soft_exit):
      return (put(hidden, states, running[:, None]), tokens, exits, done,
              passes)
    entropy, argmax = off_ramp.entropy_and_argmax(cfg, weights, states,
                                                  with_entropy=early)
    if early:
      leave = running & (last | off_ramp.confident(entropy, exit_threshold))
    else:
      leave = running & last
    if cfg.soft_exit:
      states = off_ramp.feed_back(cfg, weights, states, argmax)
    return (put(hidden, states, running[:, None]), put(tokens, argmax, leave),
            put(exits, jnp.full_like(argmax, index), leave),
            put(done, True, leave), passes)

  real = self_keys.reshape(slots)
  state = (hidden.reshape(slots, -1), jnp.zeros((slots,), jnp.int32),
           jnp.full((slots,), layers - 1, jnp.int32), ~real,
           jnp.zeros((), jnp.int32))
  layers_run = jnp.zeros((), jnp.int32)
  for index in range(layers):
    if eos_id is not None and index > 0:
      hidden, tokens, exits, done, passes = state
      decided = decided_rows(tokens.reshape(batch, length),
                             done.reshape(batch, length),
                             real.reshape(batch, length), eos_id)
      done |= jnp.repeat(decided, length)
      state = (hidden, tokens, exits, done, passes)
    pending = jnp.sum(~state[3])
    branch = jnp.sum(jnp.asarray(sizes[1:]) >= pending)
    branches = [lambda s, c=c, i=index: run_layer(i, c, s) for c in sizes]
    state = jax.lax.cond(pending > 0, lambda s: jax.lax.switch(
        branch, branches, s), lambda s: s, state)
    layers_run += (pending > 0).astype(jnp.int32)
  _, tokens, exits, _, passes = state
  tokens, exits = (x.reshape(batch, length) for x in (tokens, exits))
  return ExitDecodeOutput(tokens=tokens, exit_layers=exits,
                          layers_run=layers_run, slot_passes=passes)
