"""Elmer: the encoder-decoder with off-ramps, and the checks on its inputs.

The off-ramp of every decoder layer is the one tied LM head:
`shared.attend(h) + final_logits_bias`. There are no per-layer heads. With
`ElmerConfig.soft_exit` the model also has `concat_head` (2d -> d, no bias,
one for all layers, at the top of the tree as in the released HF model).
"""

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elmer_jax.model import initializers, off_ramp
from elmer_jax.model.attention import attention_mask
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.decoder import Decoder, LayerInputs
from elmer_jax.model.embeddings import token_embedder
from elmer_jax.model.encoder import Encoder
from elmer_jax.model.running_tokens import RunningTokensDecoder


@flax.struct.dataclass
class ElmerOutput:
  """`logits`: (batch, length, vocab) at each token's exit layer, fp32.

  `layer_logits`: (layers, batch, length, vocab), every off-ramp after
  copy-on-exit (a token that left at layer l shows its exit logits above l);
  only when asked for.
  `exit_layers`: (batch, length) int32, the layer each token left at: the
  given ones, or earlier where entropy early exit moved them.
  `exit_states`: (batch, length, embed), the states `logits` are read from
  (unused logits cost nothing under jit).
  """

  logits: jax.Array
  exit_layers: jax.Array
  layer_logits: Optional[jax.Array] = None
  exit_states: Optional[jax.Array] = None


def _concrete(x) -> Optional[np.ndarray]:
  """The value of `x` as NumPy, or None while tracing."""
  if x is None or isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def _check_range(name: str, x, low: int, high: int, what: str) -> None:
  value = _concrete(x)
  if value is None or value.size == 0:
    return
  if value.min() < low or value.max() > high:
    raise ValueError(f"{name} has values in [{value.min()}, {value.max()}]; "
                     f"{what} allows [{low}, {high}].")


def _check_shape(name: str, x, expected: tuple[int, ...], why: str) -> None:
  if x is not None and tuple(x.shape) != expected:
    raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {expected} "
                     f"({why}).")


def validate_inputs(config: ElmerConfig, encoder_input_tokens,
                    decoder_input_tokens, exit_layers=None, *,
                    encoder_segment_ids=None, decoder_segment_ids=None,
                    encoder_positions=None, decoder_positions=None,
                    gold_tokens=None) -> None:
  """Raises ValueError naming the argument that does not fit `config`.

  Shapes are checked always (at trace time, i.e. before compilation); value
  ranges whenever the arrays are concrete (eager calls and host-side checks).
  """
  for name, tokens in (("encoder_input_tokens", encoder_input_tokens),
                       ("decoder_input_tokens", decoder_input_tokens)):
    if tokens.ndim != 2:
      raise ValueError(f"{name} must be 2-D (batch, length); got shape "
                       f"{tuple(tokens.shape)}.")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"{name} must hold integer token ids; got dtype "
                       f"{tokens.dtype}.")
    _check_range(name, tokens, 0, config.vocab_size - 1,
                 f"ElmerConfig.vocab_size={config.vocab_size}")
  batch = encoder_input_tokens.shape[0]
  if decoder_input_tokens.shape[0] != batch:
    raise ValueError(
        f"decoder_input_tokens has batch size {decoder_input_tokens.shape[0]} "
        f"but encoder_input_tokens has {batch}; they must match.")
  for side, tokens, positions, segments in (
      ("encoder", encoder_input_tokens, encoder_positions, encoder_segment_ids),
      ("decoder", decoder_input_tokens, decoder_positions, decoder_segment_ids)):
    length = tokens.shape[1]
    if positions is None and length > config.max_positions:
      raise ValueError(
          f"{side}_input_tokens has length {length} but the position table "
          f"holds ElmerConfig.max_positions={config.max_positions}; allowed "
          f"lengths are 1..{config.max_positions}.")
    _check_shape(f"{side}_positions", positions, tuple(tokens.shape),
                 f"same as {side}_input_tokens")
    _check_range(f"{side}_positions", positions, 0, config.max_positions - 1,
                 f"ElmerConfig.max_positions={config.max_positions}")
    _check_shape(f"{side}_segment_ids", segments, tuple(tokens.shape),
                 f"same as {side}_input_tokens")
  if exit_layers is not None:
    _check_shape("exit_layers", exit_layers, tuple(decoder_input_tokens.shape),
                 "one exit layer per decoder token")
    if not jnp.issubdtype(exit_layers.dtype, jnp.integer):
      raise ValueError(f"exit_layers must be integers; got dtype "
                       f"{exit_layers.dtype}.")
    _check_range("exit_layers", exit_layers, 0, config.decoder_layers - 1,
                 f"a decoder of ElmerConfig.decoder_layers="
                 f"{config.decoder_layers} layers")
  if gold_tokens is not None:
    if not config.soft_exit:
      raise ValueError("gold_tokens are mixed into the soft-exit feedback; "
                       "this model has ElmerConfig.soft_exit=False.")
    _check_shape("gold_tokens", gold_tokens, tuple(decoder_input_tokens.shape),
                 "one gold label per decoder token")
    _check_range("gold_tokens", gold_tokens, 0, config.vocab_size - 1,
                 f"ElmerConfig.vocab_size={config.vocab_size}")


class Elmer(nn.Module):
  """ELMER: encoder, bidirectional decoder with copy-on-exit, tied off-ramps.

  `running_capacity` (training, LPLM): per decoder layer the most tokens per
  row still running there; the decoder then skips exited tokens' work
  (model/running_tokens.py). None: the dense decoder.
  """

  config: ElmerConfig
  running_capacity: Optional[tuple[int, ...]] = None

  def setup(self):
    cfg = self.config
    self.shared = token_embedder(cfg)
    self.encoder = Encoder(cfg, self.shared)
    self.decoder = (
        Decoder(cfg, self.shared) if self.running_capacity is None else
        RunningTokensDecoder(cfg, self.shared,
                             capacity=tuple(self.running_capacity)))
    self.final_logits_bias = self.param(
        "final_logits_bias", initializers.zeros(("vocab",)),
        (cfg.vocab_size,), cfg.weight_dtype)
    # (2d, d) like an FFN's second matrix: split over `tensor` on the input.
    self.concat_head = (self.param(
        "concat_head", initializers.normal(cfg.init_std, ("mlp", "embed")),
        (2 * cfg.d_model, cfg.d_model), cfg.weight_dtype)
                        if cfg.soft_exit else None)

  def off_ramp_weights(self) -> off_ramp.OffRampWeights:
    # A buffer in BART: no gradient reaches it (the optimizer freezes it too).
    return off_ramp.OffRampWeights(
        self.shared.embedding, jax.lax.stop_gradient(self.final_logits_bias),
        self.concat_head)

  def off_ramp(self, states: jax.Array) -> jax.Array:
    """The tied LM head: logits (fp32) for (batch, length, embed) states."""
    return off_ramp.logits(self.config, self.off_ramp_weights(), states)

  def encode(self, encoder_input_tokens: jax.Array, *,
             encoder_segment_ids: Optional[jax.Array] = None,
             encoder_positions: Optional[jax.Array] = None,
             deterministic: bool = True) -> jax.Array:
    mask = attention_mask(encoder_input_tokens, encoder_input_tokens,
                          self.config.pad_id, encoder_segment_ids,
                          encoder_segment_ids)
    return self.encoder(encoder_input_tokens, mask, encoder_positions,
                        deterministic)

  def decode(self, encoded: jax.Array, encoder_input_tokens: jax.Array,
             decoder_input_tokens: jax.Array,
             exit_layers: Optional[jax.Array] = None, *,
             encoder_segment_ids: Optional[jax.Array] = None,
             decoder_segment_ids: Optional[jax.Array] = None,
             decoder_positions: Optional[jax.Array] = None,
             deterministic: bool = True,
             return_all_layers: bool = False,
             gold_tokens: Optional[jax.Array] = None,
             gold_mix_rate: float = 0.0,
             exit_threshold: Optional[float] = None) -> ElmerOutput:
    """Decoder pass over encoder states; arguments as in `__call__`."""
    cfg = self.config
    if not 0.0 <= gold_mix_rate <= 1.0:
      raise ValueError(f"gold_mix_rate={gold_mix_rate} is not a probability "
                       "in [0, 1].")
    if exit_layers is None:
      exit_layers = jnp.full(decoder_input_tokens.shape, cfg.decoder_layers - 1,
                             jnp.int32)
    self_mask = attention_mask(decoder_input_tokens, decoder_input_tokens,
                               cfg.pad_id, decoder_segment_ids,
                               decoder_segment_ids)
    cross_mask = attention_mask(decoder_input_tokens, encoder_input_tokens,
                                cfg.pad_id, decoder_segment_ids,
                                encoder_segment_ids)
    inputs = LayerInputs(
        encoded=encoded, self_mask=self_mask, cross_mask=cross_mask,
        weights=self.off_ramp_weights(), gold_tokens=gold_tokens,
        exit_threshold=(jnp.asarray(exit_threshold, jnp.float32)
                        if off_ramp.exits_early(exit_threshold) else None))
    exit_states, exit_layers, layer_logits = self.decoder(
        decoder_input_tokens, exit_layers, inputs, decoder_positions,
        deterministic, collect_logits=return_all_layers,
        gold_mix_rate=gold_mix_rate)
    return ElmerOutput(logits=self.off_ramp(exit_states),
                       exit_layers=exit_layers, layer_logits=layer_logits,
                       exit_states=exit_states)

  def __call__(self, encoder_input_tokens: jax.Array,
               decoder_input_tokens: jax.Array,
               exit_layers: Optional[jax.Array] = None, *,
               encoder_segment_ids: Optional[jax.Array] = None,
               decoder_segment_ids: Optional[jax.Array] = None,
               encoder_positions: Optional[jax.Array] = None,
               decoder_positions: Optional[jax.Array] = None,
               deterministic: bool = True,
               return_all_layers: bool = False,
               gold_tokens: Optional[jax.Array] = None,
               gold_mix_rate: float = 0.0,
               exit_threshold: Optional[float] = None) -> ElmerOutput:
    """Full forward pass. `exit_layers` defaults to the last layer for all.

    Soft exit (`ElmerConfig.soft_exit`): `gold_tokens` (the labels; give them
    in training only, as the released code) replace the fed-back argmax with
    probability `gold_mix_rate`, drawn from the `gold_mix` rng stream.
    `exit_threshold` (nats; None or 0: off) lets a token leave at the first
    layer whose off-ramp entropy is <= it, if before its exit layer.
    """
    validate_inputs(
        self.config, encoder_input_tokens, decoder_input_tokens, exit_layers,
        encoder_segment_ids=encoder_segment_ids,
        decoder_segment_ids=decoder_segment_ids,
        encoder_positions=encoder_positions,
        decoder_positions=decoder_positions, gold_tokens=gold_tokens)
    encoded = self.encode(encoder_input_tokens,
                          encoder_segment_ids=encoder_segment_ids,
                          encoder_positions=encoder_positions,
                          deterministic=deterministic)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       exit_layers, encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions,
                       deterministic=deterministic,
                       return_all_layers=return_all_layers,
                       gold_tokens=gold_tokens, gold_mix_rate=gold_mix_rate,
                       exit_threshold=exit_threshold)
