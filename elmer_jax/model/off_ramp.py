"""The off-ramp of a decoder layer, and what is computed from it between layers.

The off-ramp is the one tied LM head, `shared.attend(h) + final_logits_bias`.
Two things read it between layers:

- Soft exit (`ElmerConfig.soft_exit`), fine-tuning as RUCAIBox released it
  (`fine-tune/modeling_bart.py`, `BartDecoder.forward`): before every layer but
  the first, the argmax token of the previous layer's off-ramp is embedded with
  the shared token table (plain lookup: no scale, no positions, no LayerNorm)
  and `concat_head(concat([h, embedding]))` (one `Linear(2d, d, bias=False)`
  for all layers, `concat_head.weight` at the top of the HF model) becomes the
  next layer's input. During training each token's argmax is replaced by its
  gold label with probability 0.3, drawn per token and per layer. The released
  code takes the argmax without `final_logits_bias`, a buffer of zeros there;
  here the argmax is of the full off-ramp, the same thing while the bias is 0.
- Entropy early exit (the paper's hard exit, at inference): a token whose
  off-ramp entropy falls to the threshold leaves at that layer.
"""

import numbers
from typing import Optional, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import matmul
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.row_blocks import map_row_blocks

# The rng stream that draws which tokens take their gold label (soft exit).
GOLD_MIX_RNG = "gold_mix"


@flax.struct.dataclass
class OffRampWeights:
  """Arrays the decoder layers read from outside the layer stack.

  Passed into the stack as broadcast arguments, so per-layer and scanned
  stacks share the one tied head and the one `concat_head`.
  """

  embedding: jax.Array  # (vocab, embed): the shared token table.
  bias: jax.Array  # (vocab,): final_logits_bias.
  concat_head: Optional[jax.Array] = None  # (2 * embed, embed), soft exit.


def logits(config: ElmerConfig, weights: OffRampWeights,
           states: jax.Array) -> jax.Array:
  """The tied LM head: fp32 logits of (batch, length, embed) states."""
  dtype = config.compute_dtype
  out = matmul.dot_transposed(states.astype(dtype),
                              weights.embedding.astype(dtype))
  out = out.astype(jnp.float32) + weights.bias
  return nn.with_logical_constraint(out, ("batch", "length", "vocab"))


def entropy(logits_: jax.Array) -> jax.Array:
  """Entropy in nats of the softmax over the last axis."""
  log_probs = jax.nn.log_softmax(logits_.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


# Logits per block of the exit test (2 MiB in fp32): a block's logits and
# the exponentials derived from them stay in a core's L2 cache.
EXIT_TEST_BLOCK = 1 << 19
# A table of at most this many elements stays in cache between blocks, so
# blocks are rows over the whole vocabulary. A larger one is read once per
# block of rows: rows then come in blocks as tall as chunks of
# `EXIT_TEST_MIN_COLUMNS` allow and the vocabulary in chunks as wide as the
# rows leave room for, merged as they come (at ELMER-base, a 154 MB table,
# blocks of 10 full rows read it 7 times for 64 slots, 205 for 2,048).
EXIT_TEST_CACHED_TABLE = 1 << 22
EXIT_TEST_MIN_COLUMNS = 256
# Up to this many logits the rows of a large table take the whole vocabulary
# in one product: a chunk is a copy of part of the table (XLA:CPU does not
# read a slice in place), which for a batch of one output costs more than the
# cache misses it saves.
EXIT_TEST_WHOLE_VOCABULARY = 1 << 22


def _first_max(z: jax.Array, top: jax.Array) -> jax.Array:
  """argmax's first-of-ties index from the row maxima: on XLA:CPU a min over
  a select costs half of argmax's variadic (value, index) reduction."""
  vocab = z.shape[-1]
  index = jnp.min(jnp.where(z == top, jnp.arange(vocab, dtype=jnp.int32),
                            vocab), axis=-1)
  return jnp.minimum(index, vocab - 1)  # NaN logits match no maximum.


def _chunk_test(config: ElmerConfig, weights: OffRampWeights,
                states: jax.Array, start: jax.Array, width: int,
                with_entropy: bool) -> tuple[jax.Array, ...]:
  """(max m, first argmax[, s = sum e^(z-m), t = sum (z-m) e^(z-m)]) of the
  logits of vocabulary columns [start, start + width)."""
  dtype = config.compute_dtype
  table = jax.lax.dynamic_slice_in_dim(weights.embedding, start, width)
  bias = jax.lax.dynamic_slice_in_dim(weights.bias, start, width)
  z = matmul.dot_transposed(states.astype(dtype), table.astype(dtype),
                            preferred_element_type=jnp.float32) + bias
  top = jnp.max(z, axis=-1, keepdims=True)
  argmax = _first_max(z, top) + start
  if not with_entropy:
    return top[:, 0], argmax
  shifted = z - top
  exp = jnp.exp(shifted)
  # The two sums as one matrix-vector product: XLA:CPU runs it faster than
  # two row reductions, which each materialise their input.
  ones = jnp.ones((width,), jnp.float32)
  total, weighted = jnp.dot(jnp.stack([exp, shifted * exp]), ones)
  return top[:, 0], argmax, total, weighted


def _merge(first: tuple[jax.Array, ...], second: tuple[jax.Array, ...]
           ) -> tuple[jax.Array, ...]:
  """The statistics of two column chunks, `second`'s columns after
  `first`'s: s and t rescaled to the common maximum (ties keep the first)."""
  top = jnp.maximum(first[0], second[0])
  argmax = jnp.where(second[0] > first[0], second[1], first[1])
  if len(first) == 2:  # Argmax only.
    return top, argmax
  merged = [jnp.zeros_like(top), jnp.zeros_like(top)]
  for m, _, s, t in (first, second):
    scale = jnp.exp(m - top)
    merged[0] += scale * s
    merged[1] += scale * (t + (m - top) * s)
  return top, argmax, *merged


def _exit_test_rows(config: ElmerConfig, weights: OffRampWeights,
                    states: jax.Array, width: int, with_entropy: bool
                    ) -> tuple[jax.Array, jax.Array]:
  vocab = weights.embedding.shape[0]
  chunk = lambda start, w: _chunk_test(config, weights, states, start, w,
                                       with_entropy)
  full = vocab // width
  stats = chunk(jnp.int32(0), width)
  if full > 1:
    stats, _ = jax.lax.scan(
        lambda acc, start: (_merge(acc, chunk(start, width)), None), stats,
        jnp.arange(1, full, dtype=jnp.int32) * width)
  if vocab > full * width:
    stats = _merge(stats, chunk(jnp.int32(full * width), vocab - full * width))
  if not with_entropy:
    return jnp.zeros(stats[1].shape, jnp.float32), stats[1]
  _, argmax, total, weighted = stats
  return jnp.log(total) - weighted / total, argmax


def entropy_and_argmax(config: ElmerConfig, weights: OffRampWeights,
                       states: jax.Array, with_entropy: bool = True
                       ) -> tuple[jax.Array, jax.Array]:
  """The exit test of (..., embed) states in one pass over the vocabulary:
  the off-ramp in the compute dtype with fp32 accumulation, then max m,
  s = sum(e^(z-m)), t = sum((z-m) e^(z-m)): entropy = log s - t / s; in
  blocks of at most `EXIT_TEST_BLOCK` logits. Returns (entropy in nats, or
  zeros without `with_entropy`; argmax token, the first of ties)."""
  shape, embed = states.shape[:-1], states.shape[-1]
  rows, vocab = states.size // embed, weights.embedding.shape[0]
  if vocab * embed <= EXIT_TEST_CACHED_TABLE:
    block_rows, width = max(1, EXIT_TEST_BLOCK // vocab), vocab
  else:
    block_rows = EXIT_TEST_BLOCK // EXIT_TEST_MIN_COLUMNS
    width = (vocab if rows * vocab <= EXIT_TEST_WHOLE_VOCABULARY else
             min(vocab, EXIT_TEST_BLOCK // min(rows, block_rows)))
  entropy_, argmax = map_row_blocks(
      lambda x: _exit_test_rows(config, weights, x, width, with_entropy),
      block_rows, states.reshape(-1, embed))
  return entropy_.reshape(shape), argmax.reshape(shape)


def exits_early(threshold: Union[None, float, jax.Array]) -> bool:
  """Whether an exit threshold (nats) turns entropy exit on: None and 0 are
  off. An array counts as on: its value is known only inside the program,
  where `confident` moves no token for 0."""
  return threshold is not None and not (
      isinstance(threshold, numbers.Real) and threshold == 0)


def confident(entropies: jax.Array,
              threshold: Union[float, jax.Array]) -> jax.Array:
  """Tokens whose off-ramp entropy lets them leave: <= `threshold`, and none
  when the threshold is 0 (off)."""
  return (threshold > 0) & (entropies <= threshold)


def exit_by_entropy(logits_: jax.Array, exit_layers: jax.Array,
                    layer_index: jax.Array, threshold: jax.Array) -> jax.Array:
  """Moves a token's exit to `layer_index` if it has not left yet and is
  `confident`."""
  pending = exit_layers > layer_index
  return jnp.where(pending & confident(entropy(logits_), threshold),
                   layer_index, exit_layers)


def mix_gold(predicted: jax.Array, gold: jax.Array, rate: float,
             rng: Optional[jax.Array]) -> jax.Array:
  """Each token takes its gold label with probability `rate` (needs `rng`
  only when 0 < rate < 1)."""
  if rate <= 0.0:
    return predicted
  if rate >= 1.0:
    return gold
  return jnp.where(jax.random.bernoulli(rng, rate, predicted.shape), gold,
                   predicted)


def feed_back(config: ElmerConfig, weights: OffRampWeights, states: jax.Array,
              tokens: jax.Array) -> jax.Array:
  """The next layer's input under soft exit: concat_head([h, embed(tokens)])."""
  dtype = config.compute_dtype
  # Gather in the table's dtype, as embeddings.lookup does (fp32 scatter).
  embedded = jnp.take(weights.embedding, tokens, axis=0).astype(dtype)
  both = jnp.concatenate([states.astype(dtype), embedded], axis=-1)
  return matmul.dot(both, weights.concat_head.astype(dtype))
