"""Elmer: the encoder-decoder with off-ramps, and the checks on its inputs.

The off-ramp of every decoder layer is the one tied LM head:
`shared.attend(h) + final_logits_bias`. There are no per-layer heads.
"""

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elmer_jax.model import initializers
from elmer_jax.model.attention import attention_mask
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.decoder import Decoder
from elmer_jax.model.embeddings import token_embedder
from elmer_jax.model.encoder import Encoder


@flax.struct.dataclass
class ElmerOutput:
  """`logits`: (batch, length, vocab) at each token's exit layer, fp32.

  `layer_logits`: (layers, batch, length, vocab), every off-ramp after
  copy-on-exit (a token that left at layer l shows its exit logits above l);
  only when asked for.
  """

  logits: jax.Array
  layer_logits: Optional[jax.Array] = None


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
                    encoder_positions=None, decoder_positions=None) -> None:
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


class Elmer(nn.Module):
  """ELMER: encoder, bidirectional decoder with copy-on-exit, tied off-ramps."""

  config: ElmerConfig

  def setup(self):
    cfg = self.config
    self.shared = token_embedder(cfg)
    self.encoder = Encoder(cfg, self.shared)
    self.decoder = Decoder(cfg, self.shared)
    self.final_logits_bias = self.param(
        "final_logits_bias", initializers.zeros(("vocab",)),
        (cfg.vocab_size,), cfg.weight_dtype)

  def off_ramp(self, states: jax.Array) -> jax.Array:
    """The tied LM head: logits (fp32) for decoder states."""
    logits = self.shared.attend(states.astype(self.config.compute_dtype))
    logits = logits.astype(jnp.float32) + self.final_logits_bias
    return nn.with_logical_constraint(
        logits, ("batch", "length", "vocab") if logits.ndim == 3 else
        ("layers", "batch", "length", "vocab"))

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
             return_all_layers: bool = False) -> ElmerOutput:
    cfg = self.config
    if exit_layers is None:
      exit_layers = jnp.full(decoder_input_tokens.shape, cfg.decoder_layers - 1,
                             jnp.int32)
    self_mask = attention_mask(decoder_input_tokens, decoder_input_tokens,
                               cfg.pad_id, decoder_segment_ids,
                               decoder_segment_ids)
    cross_mask = attention_mask(decoder_input_tokens, encoder_input_tokens,
                                cfg.pad_id, decoder_segment_ids,
                                encoder_segment_ids)
    exit_states, layer_states = self.decoder(
        decoder_input_tokens, encoded, self_mask, cross_mask, exit_layers,
        decoder_positions, deterministic, return_all_layers)
    return ElmerOutput(
        logits=self.off_ramp(exit_states),
        layer_logits=(self.off_ramp(layer_states) if return_all_layers
                      else None))

  def __call__(self, encoder_input_tokens: jax.Array,
               decoder_input_tokens: jax.Array,
               exit_layers: Optional[jax.Array] = None, *,
               encoder_segment_ids: Optional[jax.Array] = None,
               decoder_segment_ids: Optional[jax.Array] = None,
               encoder_positions: Optional[jax.Array] = None,
               decoder_positions: Optional[jax.Array] = None,
               deterministic: bool = True,
               return_all_layers: bool = False) -> ElmerOutput:
    """Full forward pass. `exit_layers` defaults to the last layer for all."""
    validate_inputs(
        self.config, encoder_input_tokens, decoder_input_tokens, exit_layers,
        encoder_segment_ids=encoder_segment_ids,
        decoder_segment_ids=decoder_segment_ids,
        encoder_positions=encoder_positions,
        decoder_positions=decoder_positions)
    encoded = self.encode(encoder_input_tokens,
                          encoder_segment_ids=encoder_segment_ids,
                          encoder_positions=encoder_positions,
                          deterministic=deterministic)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       exit_layers, encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions,
                       deterministic=deterministic,
                       return_all_layers=return_all_layers)
