"""Non-autoregressive generation: one decoder pass, length modes, early exit.

The decoder input is `[<s>] + [<mask>] * (T - 1)` and every slot is
predicted at once; the output is cut at the first `</s>`.

Length modes:
- `max_length`: every example gets `max_length` slots.
- `oracle`: example i gets `target_lengths[i]` slots (its reference length
  with `</s>`, i.e. its number of non-padded labels), the rest is padding.
  The released test code (RUCAIBox/ELMER `fine-tune/train.py` `test` with
  `utils.nar_padding`) gives every example of a batch the batch's longest
  reference length and no decoder padding: that is `max_length` mode with
  `max_length` set to that length.

Entropy early exit (the paper's hard exit; not in the released code): a token
leaves at the first layer whose off-ramp entropy (nats) is <= the threshold;
its prediction is that layer's argmax and its state is copied upward, so later
layers attend to it frozen. The last layer is a forced exit; a threshold of 0
turns early exit off. A soft-exit (fine-tuned) model runs its feedback through
`concat_head` between layers, with early exit on top.

`collapse_repeats` merges runs of the same token id (the released test code
merges repeated whitespace-separated words of the decoded text).
"""

import dataclasses
import functools
import logging
import math
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from elmer_jax.model import exit_decoder, off_ramp
from elmer_jax.model.config import ElmerConfig

LENGTH_MODES = ("max_length", "oracle")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to decode: length mode, slots, early-exit threshold (nats; 0: off),
  whether to merge repeated tokens."""

  length_mode: str = "max_length"
  # None: the slots the model was trained with (the run's decoder_length),
  # filled in by `generate` and `evaluate`.
  max_length: Optional[int] = None
  exit_threshold: float = 0.0
  collapse_repeats: bool = False

  def __post_init__(self):
    if self.length_mode not in LENGTH_MODES:
      raise ValueError(f"DecodeConfig.length_mode={self.length_mode!r}; "
                       f"expected one of {LENGTH_MODES}.")
    if self.max_length is not None and self.max_length < 2:
      raise ValueError(f"DecodeConfig.max_length must be >= 2 (`<s>` and "
                       f"one more slot), got {self.max_length}.")


@flax.struct.dataclass
class DecodeOutput:
  """`tokens`: (batch, max_length) int32, the output ids, then the first
  `</s>` if one was predicted, then padding. `lengths`: (batch,) output
  tokens before `</s>`. `exit_layers`: (batch, max_length) int32, the layer
  each of `tokens` left at (0-based), -1 on padding. `layers_run`: () the
  decoder layers the batch ran (decoding stops once every slot has exited);
  `slot_passes`: () slot-layers computed (running tokens, in capacities)."""

  tokens: jax.Array
  lengths: jax.Array
  exit_layers: jax.Array
  layers_run: Optional[jax.Array] = None
  slot_passes: Optional[jax.Array] = None


def check_threshold(threshold: float, vocab_size: int) -> None:
  """Entropies lie in [0, log V]; a threshold outside cannot mean anything."""
  high = math.log(vocab_size)
  if not 0.0 <= threshold <= high:
    raise ValueError(
        f"DecodeConfig.exit_threshold={threshold} is outside [0, {high:.4f}] "
        f"nats, i.e. [0, log(ElmerConfig.vocab_size={vocab_size})]; 0 turns "
        "early exit off.")


def exit_test_flops(config: ElmerConfig, exit_layers: np.ndarray,
                    slots: np.ndarray, encoder_length: int
                    ) -> tuple[float, float]:
  """(matmul FLOPs the entropy exit tests add, FLOPs the exits save) for
  decoded slots, when the off-ramp would otherwise run only at the exit
  (no soft exit). A slot leaving at e runs e extra off-ramps (2 d V each) and
  skips L-1-e layers of its own queries, attention, cross-attention and
  feed-forward (keys and values are computed for every slot anyway)."""
  d, layers = config.d_model, config.decoder_layers
  exits = np.asarray(exit_layers)[np.asarray(slots, bool)]
  length = np.asarray(slots).shape[1]
  per_layer = 8 * d * d + 4 * (length + encoder_length) * d + 4 * d * config.d_ff
  cost = float(np.sum(exits)) * 2 * d * config.vocab_size
  return cost, float(np.sum(layers - 1 - exits)) * per_layer


def warn_if_exit_costs_more(config: ElmerConfig, decode_config: DecodeConfig,
                            exit_layers: np.ndarray, slots: np.ndarray,
                            encoder_length: int) -> bool:
  """Logs a warning (and returns True) when entropy exit on a model without
  soft exit costs more than it saves at the exit rate just measured."""
  if config.soft_exit or not off_ramp.exits_early(
      decode_config.exit_threshold):
    return False
  cost, saved = exit_test_flops(config, exit_layers, slots, encoder_length)
  if cost <= saved:
    return False
  exits = np.asarray(exit_layers)[np.asarray(slots, bool)]
  logging.warning(
      "DecodeConfig.exit_threshold=%s on a model without soft exit "
      "(ElmerConfig.soft_exit=False): the exit tests (the %d-token off-ramp "
      "at every layer a token runs) cost %.3g GFLOP and save %.3g GFLOP at "
      "the measured average exit layer %.2f of 0..%d, so decoding is slower "
      "than with exit_threshold=0.", decode_config.exit_threshold,
      config.vocab_size, cost / 1e9, saved / 1e9,
      float(exits.mean()) if exits.size else float("nan"),
      config.decoder_layers - 1)
  return True


def decoder_inputs(config: ElmerConfig, batch: int, length: int,
                   target_lengths: Optional[jax.Array] = None) -> jax.Array:
  """`<s>` then `<mask>` slots; padding from `target_lengths[i]` on."""
  position = jnp.arange(length)[None, :]
  tokens = jnp.where(position == 0, config.bos_id, config.mask_id)
  tokens = jnp.broadcast_to(tokens, (batch, length))
  if target_lengths is not None:
    tokens = jnp.where(position < target_lengths[:, None], tokens,
                       config.pad_id)
  return tokens.astype(jnp.int32)


def finalize(tokens: jax.Array, exit_layers: jax.Array, slots: jax.Array,
             eos_id: int, pad_id: int, collapse: bool) -> DecodeOutput:
  """Cuts at the first `</s>` (or the last slot), optionally merges repeats,
  and packs what is kept to the left. `slots`: the non-padding slots."""
  length = tokens.shape[1]
  position = jnp.arange(length)[None, :]
  eos = (tokens == eos_id) & slots
  first_eos = jnp.where(eos.any(axis=1), jnp.argmax(eos, axis=1), length)
  end = jnp.minimum(first_eos, jnp.sum(slots, axis=1))
  keep = position < end[:, None]
  if collapse:
    repeat = jnp.pad(tokens[:, 1:] == tokens[:, :-1], ((0, 0), (1, 0)))
    keep &= ~repeat
  lengths = jnp.sum(keep, axis=1, dtype=jnp.int32)
  keep |= position == first_eos[:, None]
  order = jnp.argsort(~keep, axis=1, stable=True)
  filled = position < jnp.sum(keep, axis=1)[:, None]
  pick = lambda x, empty: jnp.where(
      filled, jnp.take_along_axis(x, order, axis=1), empty).astype(jnp.int32)
  return DecodeOutput(tokens=pick(tokens, pad_id), lengths=lengths,
                      exit_layers=pick(exit_layers, -1))


@functools.lru_cache(maxsize=32)
def _compiled_decode(model_config: ElmerConfig, length: int,
                     collapse_repeats: bool, early: bool) -> Callable:
  """The jitted decode, shared by every threshold of one exit setting: the
  threshold is an argument (a traced scalar), so a threshold sweep compiles
  once; with early exit off (threshold 0) the exit tests leave the program."""

  @jax.jit
  def run(params, encoder_input_tokens, target_lengths, exit_threshold):
    decoder_input_tokens = decoder_inputs(
        model_config, encoder_input_tokens.shape[0], length, target_lengths)
    # Without early exit and without padded slots (`max_length` mode) every
    # slot runs every layer: the smaller capacities would be dead branches,
    # each a copy of every layer to compile.
    every_slot_runs = not early and target_lengths is None
    out = exit_decoder.decode(model_config, params, encoder_input_tokens,
                              decoder_input_tokens,
                              exit_threshold if early else 0.0,
                              (1,) if every_slot_runs
                              else exit_decoder.CAPACITY_FRACTIONS,
                              eos_id=model_config.eos_id)
    return finalize(out.tokens, out.exit_layers,
                    decoder_input_tokens != model_config.pad_id,
                    model_config.eos_id, model_config.pad_id,
                    collapse_repeats).replace(layers_run=out.layers_run,
                                              slot_passes=out.slot_passes)

  return run


def make_decode_fn(model_config: ElmerConfig, decode_config: DecodeConfig
                   ) -> Callable[..., DecodeOutput]:
  """Returns decode_fn(params, encoder_input_tokens, target_lengths=None),
  compiled once per input shape and exit setting (any nonzero threshold
  shares one program); `target_lengths` only in `oracle` mode."""
  check_threshold(decode_config.exit_threshold, model_config.vocab_size)
  if decode_config.max_length is None:
    raise ValueError("DecodeConfig.max_length is None: give the number of "
                     "slots (generate and evaluate use the run's "
                     "TrainConfig.decoder_length).")
  if decode_config.max_length > model_config.max_positions:
    raise ValueError(
        f"DecodeConfig.max_length={decode_config.max_length} exceeds the "
        f"decoder's ElmerConfig.max_positions={model_config.max_positions}.")
  length = decode_config.max_length
  early = off_ramp.exits_early(decode_config.exit_threshold)
  run = _compiled_decode(model_config, length,
                         decode_config.collapse_repeats, early)
  threshold = np.float32(decode_config.exit_threshold)

  def decode_fn(params, encoder_input_tokens,
                target_lengths=None) -> DecodeOutput:
    oracle = decode_config.length_mode == "oracle"
    if oracle != (target_lengths is not None):
      raise ValueError(
          f"DecodeConfig.length_mode={decode_config.length_mode!r} "
          f"{'needs' if oracle else 'takes no'} target_lengths.")
    if oracle:
      target_lengths = np.asarray(target_lengths, np.int32)
      if target_lengths.shape != (encoder_input_tokens.shape[0],):
        raise ValueError(f"target_lengths has shape {target_lengths.shape}; "
                         f"expected ({encoder_input_tokens.shape[0]},).")
      if target_lengths.min() < 1 or target_lengths.max() > length:
        raise ValueError(
            f"target_lengths in [{target_lengths.min()}, "
            f"{target_lengths.max()}]; oracle mode allows [1, "
            f"DecodeConfig.max_length={length}].")
    return run(params, encoder_input_tokens, target_lengths, threshold)

  return decode_fn


def decode(model_config: ElmerConfig, params: Any,
           encoder_input_tokens: jax.Array, decode_config: DecodeConfig,
           target_lengths: Optional[jax.Array] = None) -> DecodeOutput:
  """Decodes a batch of encoder inputs (see `make_decode_fn`)."""
  return make_decode_fn(model_config, decode_config)(
      params, encoder_input_tokens, target_lengths)


def encoder_batch(model_config: ElmerConfig, inputs: Sequence[Sequence[int]],
                  batch_size: int, length: int) -> np.ndarray:
  """`inputs` (token ids, each at most `length`) as one fixed-shape
  (batch_size, length) array, so every batch reuses one compilation; filler
  rows hold a lone `</s>`."""
  rows = np.full((batch_size, length), model_config.pad_id, np.int32)
  rows[:, 0] = model_config.eos_id
  for row, ids in zip(rows, inputs):
    row[:len(ids)] = ids
  return rows


def decode_in_batches(model_config: ElmerConfig, params: Any,
                      decode_config: DecodeConfig,
                      inputs: Sequence[Sequence[int]], batch_size: int,
                      length: int,
                      target_lengths: Optional[Sequence[int]] = None
                      ) -> tuple[list[dict[str, list[int]]], np.ndarray]:
  """Decodes token-id inputs (each at most `length`) in batches of one shape
  (`encoder_batch`: the last is padded, and its filler rows dropped), and
  warns if early exit costs more than it saves. `target_lengths`: one per
  input, in `oracle` mode. Returns per input its output `tokens` and their
  `exit_layers`, and every input's exit layer per slot (-1: an empty slot,
  after the kept tokens and their `</s>`)."""
  decode_fn = make_decode_fn(model_config, decode_config)
  decoded, exits = [], []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    lengths = None
    if target_lengths is not None:
      lengths = np.ones((batch_size,), np.int32)
      lengths[:len(chunk)] = target_lengths[start:start + batch_size]
    out = jax.device_get(decode_fn(params, encoder_batch(
        model_config, chunk, batch_size, length), lengths))
    exits.append(out.exit_layers[:len(chunk)])
    for i in range(len(chunk)):
      ids = out.tokens[i, :out.lengths[i]].tolist()
      decoded.append({"tokens": ids,
                      "exit_layers": out.exit_layers[i, :len(ids)].tolist()})
  exits = np.concatenate(exits)
  warn_if_exit_costs_more(model_config, decode_config, exits, exits >= 0,
                          length)
  return decoded, exits


def generate_text(model_config: ElmerConfig, params: Any, vocabulary,
                  texts: Sequence[str], decode_config: DecodeConfig,
                  max_input_length: int, batch_size: int = 32
                  ) -> list[dict[str, Any]]:
  """Decodes texts with a seqio vocabulary, in batches of `batch_size`.

  Inputs are encoded as the fine-tuning tasks do (`<s>` ids `</s>`, or ids
  `</s>` when the vocabulary builds inputs without `<s>`) and cut to
  `max_input_length` tokens with both special tokens (at most the encoder's
  positions), with one warning for all cut inputs. Returns per text its `text`, output `tokens`
  and their `exit_layers`.
  """
  # seqio (and TensorFlow) for text only: decoding ids needs neither, so
  # bench/generation.py runs on a GPU host's image without them.
  from elmer_jax.data import vocabularies
  if decode_config.length_mode != "max_length":
    raise ValueError("generate_text has no reference lengths; use "
                     "DecodeConfig.length_mode='max_length'.")
  if vocabulary.eos_id != model_config.eos_id:
    raise ValueError(f"The vocabulary's eos_id={vocabulary.eos_id} differs "
                     f"from ElmerConfig.eos_id={model_config.eos_id}.")
  limit = min(max_input_length, model_config.max_positions)
  before = [model_config.bos_id] if vocabularies.encoder_bos(vocabulary) else []
  room = limit - len(before) - 1
  encoded, cut = [], 0
  for index, text in enumerate(texts):
    if not text.strip():
      raise ValueError(f"texts[{index}] is empty; every input needs text.")
    ids = list(vocabulary.encode(text))
    if len(ids) > room:
      ids, cut = ids[:room], cut + 1
    encoded.append(before + ids + [model_config.eos_id])
  if cut:
    logging.warning("Cut %d of %d inputs to %d tokens (max_input_length=%d, "
                    "ElmerConfig.max_positions=%d).", cut, len(texts), limit,
                    max_input_length, model_config.max_positions)
  decoded, _ = decode_in_batches(model_config, params, decode_config, encoded,
                                 batch_size, limit)
  return [{"text": vocabularies.output_text(vocabulary, out["tokens"],
                                          model_config), **out}
          for out in decoded]
