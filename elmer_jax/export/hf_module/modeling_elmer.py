"""ELMER in PyTorch, shipped into exported directories for `trust_remote_code`.

Built on transformers' BART blocks (`BartModel`: the same parameter names as
`BartForConditionalGeneration`, so its checkpoints load here and back), with
what makes it ELMER, mirroring elmer_jax/model and elmer_jax/decoding.py:

- the decoder is bidirectional (padding mask only);
- each decoder token has an exit layer e: after layer l,
  `cache = where(e == l, h, cache)`, `h = where(e <= l, cache, h)`, so an
  exited token re-enters later layers with its frozen state;
- every layer's off-ramp is the one tied LM head plus `final_logits_bias`;
- soft exit (`config.soft_exit`): before each layer but the first, the previous
  off-ramp's argmax is embedded and `concat_head([h, embedding])` is the input;
- entropy early exit: a running token whose off-ramp entropy (nats) is <= the
  threshold leaves at that layer;
- `generate` is non-autoregressive: `<s>` then `<mask>` slots, one decoder
  pass, cut at the first `</s>`; called and returning like transformers'
  (token ids for `tokenizer.batch_decode`), refusing beam search and
  sampling.

This file imports only torch and transformers (it runs outside elmer_jax).
"""

import dataclasses
import math
from typing import Optional, Union

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import ModelOutput
from transformers.models.bart.modeling_bart import (BartModel,
                                                    BartPreTrainedModel)

from .configuration_elmer import LENGTH_MODES, ElmerBartConfig


@dataclasses.dataclass
class ElmerOutput(ModelOutput):
  """`logits`: (batch, length, vocab) at each token's exit layer.
  `exit_layers`: (batch, length), the layer each token left at (the given
  ones, or earlier where entropy early exit moved them).
  `layer_logits`: (layers, batch, length, vocab), every off-ramp after
  copy-on-exit; only with `output_layer_logits=True`."""

  logits: Optional[torch.FloatTensor] = None
  exit_layers: Optional[torch.LongTensor] = None
  layer_logits: Optional[torch.FloatTensor] = None
  encoder_last_hidden_state: Optional[torch.FloatTensor] = None


@dataclasses.dataclass
class ElmerGenerateOutput(ModelOutput):
  """`sequences`: (batch, slots), output ids, then the first `</s>` if one was
  predicted, then padding. `lengths`: tokens before `</s>`. `exit_layers`:
  the layer each of `sequences` left at, -1 on padding."""

  sequences: Optional[torch.LongTensor] = None
  lengths: Optional[torch.LongTensor] = None
  exit_layers: Optional[torch.LongTensor] = None


def entropy(logits: torch.Tensor) -> torch.Tensor:
  """Entropy in nats of the softmax over the last axis, in fp32."""
  log_probs = torch.log_softmax(logits.float(), dim=-1)
  return -(log_probs.exp() * log_probs).sum(-1)


def _all_decided(tokens: torch.Tensor, exited: torch.Tensor,
                 real: torch.Tensor, eos_id: int) -> bool:
  """Whether no row still has a running slot before its first exited
  `</s>` (or any running slot, without one)."""
  running = real & ~exited
  ended = exited & real & (tokens == eos_id)
  decided = (ended & (running.cumsum(1) == 0)).any(1)
  return bool((~running.any(1) | decided).all())


def finalize(tokens: torch.Tensor, exit_layers: torch.Tensor,
             slots: torch.Tensor, eos_id: int, pad_id: int,
             collapse: bool) -> ElmerGenerateOutput:
  """Cuts at the first `</s>` (or the last slot), optionally merges repeats,
  and packs what is kept to the left. `slots`: the non-padding slots."""
  length = tokens.shape[1]
  position = torch.arange(length, device=tokens.device)[None, :]
  eos = (tokens == eos_id) & slots
  first_eos = torch.where(eos.any(1), eos.int().argmax(1),
                          torch.full_like(eos[:, 0], length, dtype=torch.long))
  end = torch.minimum(first_eos, slots.sum(1))
  keep = position < end[:, None]
  if collapse:
    repeat = nn.functional.pad(tokens[:, 1:] == tokens[:, :-1], (1, 0))
    keep &= ~repeat
  lengths = keep.sum(1)
  keep |= position == first_eos[:, None]
  order = torch.sort((~keep).int(), dim=1, stable=True).indices
  filled = position < keep.sum(1)[:, None]
  pick = lambda x, empty: torch.where(filled, x.gather(1, order),
                                      torch.full_like(x, empty))
  return ElmerGenerateOutput(sequences=pick(tokens, pad_id), lengths=lengths,
                             exit_layers=pick(exit_layers, -1))


class ElmerForConditionalGeneration(BartPreTrainedModel):
  """BART's encoder and layers run as ELMER (see the module docstring)."""

  config_class = ElmerBartConfig
  _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

  def __init__(self, config: ElmerBartConfig):
    super().__init__(config)
    self.model = BartModel(config)
    vocab, width = config.vocab_size, config.d_model
    self.register_buffer("final_logits_bias", torch.zeros(1, vocab))
    self.lm_head = nn.Linear(width, vocab, bias=False)
    self.concat_head = (nn.Linear(2 * width, width, bias=False)
                        if config.soft_exit else None)
    self.post_init()

  def get_input_embeddings(self) -> nn.Embedding:
    return self.model.shared

  def get_output_embeddings(self) -> nn.Linear:
    return self.lm_head

  def off_ramp(self, states: torch.Tensor) -> torch.Tensor:
    """The tied LM head: logits of (batch, length, d_model) states."""
    return self.lm_head(states) + self.final_logits_bias

  def forward(self, input_ids: torch.LongTensor,
              decoder_input_ids: torch.LongTensor,
              exit_layers: Optional[torch.LongTensor] = None,
              attention_mask: Optional[torch.Tensor] = None,
              exit_threshold: Optional[float] = None,
              output_layer_logits: bool = False,
              stop_when_exited: bool = False) -> ElmerOutput:
    """Encoder, then the ELMER decoder. `exit_layers` (batch, length) default
    to the last layer; `exit_threshold` (nats; None or 0: off) adds entropy
    early exit; padding (`pad_token_id`) is masked on both sides unless
    `attention_mask` gives the encoder's mask. `stop_when_exited` skips the
    layers once every row's output is decided, as `generate` does: every
    non-padding slot has exited, or every slot up to the row's first exited
    `</s>` (`generate` cuts there). `logits` on the slots left are then not
    meaningful (padding, or after that `</s>`)."""
    cfg = self.config
    layers = cfg.decoder_layers
    if attention_mask is None:
      attention_mask = input_ids != cfg.pad_token_id
    if exit_layers is None:
      exit_layers = torch.full_like(decoder_input_ids, layers - 1)
    elif exit_layers.shape != decoder_input_ids.shape:
      raise ValueError(f"exit_layers has shape {tuple(exit_layers.shape)}; "
                       f"expected {tuple(decoder_input_ids.shape)}.")
    elif exit_layers.numel() and not (
        0 <= exit_layers.min() and exit_layers.max() < layers):
      raise ValueError(f"exit_layers must lie in [0, {layers - 1}].")
    exits = exit_layers.long()
    encoded = self.model.encoder(
        input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    decoder, shared = self.model.decoder, self.model.shared
    hidden = decoder.layernorm_embedding(
        shared(decoder_input_ids) + decoder.embed_positions(decoder_input_ids))
    hidden = nn.functional.dropout(hidden, cfg.dropout, self.training)
    # Always a materialised mask: with none, BART's decoder self-attention
    # (is_causal=True) would fall back to a causal one under SDPA.
    self_mask = create_bidirectional_mask(
        config=cfg, inputs_embeds=hidden,
        attention_mask=decoder_input_ids != cfg.pad_token_id,
        allow_is_bidirectional_skip=False)
    cross_mask = create_bidirectional_mask(
        config=cfg, inputs_embeds=hidden, attention_mask=attention_mask,
        encoder_hidden_states=encoded)
    cache = torch.zeros_like(hidden)
    early = bool(exit_threshold)
    layer_logits = []
    real = decoder_input_ids != cfg.pad_token_id
    tokens = torch.zeros_like(decoder_input_ids)
    for index, layer in enumerate(decoder.layers):
      if (stop_when_exited and not output_layer_logits
          and _all_decided(tokens, exits < index, real, cfg.eos_token_id)):
        break
      hidden = layer(hidden, self_mask, encoded,
                     encoder_attention_mask=cross_mask, use_cache=False)
      hidden, cache = self._copy_on_exit(hidden, cache, exits, index)
      if not (cfg.soft_exit or early or output_layer_logits):
        continue
      logits = self.off_ramp(hidden)
      if early:
        leave = (exits > index) & (entropy(logits) <= exit_threshold)
        exits = torch.where(leave, index, exits)
        tokens = torch.where(leave, logits.argmax(-1), tokens)
        hidden, cache = self._copy_on_exit(hidden, cache, exits, index)
      if cfg.soft_exit:
        fed = shared(logits.argmax(-1))
        hidden = self.concat_head(torch.cat([hidden, fed], -1))
      if output_layer_logits:
        layer_logits.append(logits)
    return ElmerOutput(
        logits=self.off_ramp(cache), exit_layers=exits,
        layer_logits=torch.stack(layer_logits) if layer_logits else None,
        encoder_last_hidden_state=encoded)

  @staticmethod
  def _copy_on_exit(hidden, cache, exits, index):
    cache = torch.where((exits == index)[..., None], hidden, cache)
    hidden = torch.where((exits <= index)[..., None], cache.detach(), hidden)
    return hidden, cache

  def decoder_inputs(self, batch: int, length: int,
                     target_lengths: Optional[torch.Tensor] = None
                     ) -> torch.LongTensor:
    """`<s>` then `<mask>` slots; padding from `target_lengths[i]` on."""
    cfg = self.config
    position = torch.arange(length, device=self.device)[None, :]
    tokens = torch.where(position == 0, cfg.bos_token_id, cfg.mask_token_id)
    tokens = tokens.expand(batch, length)
    if target_lengths is not None:
      tokens = torch.where(position < target_lengths[:, None], tokens,
                           cfg.pad_token_id)
    return tokens.long()

  @torch.no_grad()
  def generate(self, input_ids: Optional[torch.LongTensor] = None,
               attention_mask: Optional[torch.Tensor] = None,
               max_length: Optional[int] = None,
               max_new_tokens: Optional[int] = None,
               length_mode: Optional[str] = None,
               target_lengths: Optional[torch.Tensor] = None,
               exit_threshold: Optional[float] = None,
               collapse_repeats: Optional[bool] = None,
               return_dict_in_generate: bool = False,
               **kwargs) -> Union[torch.LongTensor, ElmerGenerateOutput]:
    """Non-autoregressive generation, as elmer_jax.decoding.decode, called
    like transformers' `generate`:

      ids = model.generate(**tokenizer(texts, return_tensors="pt",
                                       padding=True))
      tokenizer.batch_decode(ids, skip_special_tokens=True)

    Returns a LongTensor (batch, slots): each output, its `</s>`, padding;
    with `return_dict_in_generate=True` an `ElmerGenerateOutput` (also the
    lengths and each token's exit layer). `max_length` or `max_new_tokens`:
    the decoder slots (one pass fills them all). `length_mode` 'max_length':
    every example gets that many slots, cut at the first `</s>`; 'oracle':
    example i gets `target_lengths[i]` (its reference length with `</s>`).
    Unset arguments come from the config (`nar_*`, `exit_threshold`,
    `collapse_repeats`). Beam search and sampling are refused: NAR decoding
    is one pass with nothing to search over or sample step by step.
    """
    cfg = self.config
    input_ids = self._input_ids(input_ids, kwargs)
    mode = length_mode or cfg.nar_length_mode
    threshold = cfg.exit_threshold if exit_threshold is None else exit_threshold
    collapse = (cfg.collapse_repeats if collapse_repeats is None
                else collapse_repeats)
    if mode not in LENGTH_MODES:
      raise ValueError(f"length_mode={mode!r}; expected one of {LENGTH_MODES}.")
    if (mode == "oracle") != (target_lengths is not None):
      raise ValueError(f"length_mode={mode!r} "
                       f"{'needs' if mode == 'oracle' else 'takes no'} "
                       "target_lengths.")
    if not 0.0 <= threshold <= math.log(cfg.vocab_size):
      raise ValueError(f"exit_threshold={threshold} is outside [0, log(vocab_"
                       f"size)={math.log(cfg.vocab_size):.4f}] nats.")
    length = self._slots(max_length, max_new_tokens)
    if target_lengths is not None:
      target_lengths = torch.as_tensor(target_lengths, device=self.device)
      if target_lengths.min() < 1 or target_lengths.max() > length:
        raise ValueError(f"target_lengths must lie in [1, max_length="
                         f"{length}].")
    if attention_mask is not None:
      attention_mask = attention_mask.to(self.device)
    decoder_input_ids = self.decoder_inputs(input_ids.shape[0], length,
                                            target_lengths)
    out = self(input_ids, decoder_input_ids, attention_mask=attention_mask,
               exit_threshold=threshold or None, stop_when_exited=True)
    result = finalize(out.logits.argmax(-1), out.exit_layers,
                      decoder_input_ids != cfg.pad_token_id, cfg.eos_token_id,
                      cfg.pad_token_id, collapse)
    return result if return_dict_in_generate else result.sequences

  def _input_ids(self, input_ids: Optional[torch.LongTensor],
                 kwargs: dict) -> torch.LongTensor:
    """`input_ids` (or transformers' `inputs`) on the model's device, after
    refusing the standard arguments that NAR decoding cannot honour."""
    if input_ids is None:
      input_ids = kwargs.pop("inputs", None)
    if input_ids is None:
      raise ValueError("generate needs input_ids (the tokenized sources).")
    one_pass = ("ELMER decodes non-autoregressively in one pass: every slot "
                "is predicted at once, so there is")
    if kwargs.pop("num_beams", 1) not in (None, 1):
      raise ValueError(f"num_beams > 1: {one_pass} no beam search. Use "
                       "num_beams=1 (or leave it out).")
    if kwargs.pop("do_sample", False):
      raise ValueError(f"do_sample=True: {one_pass} no step-by-step "
                       "sampling; generation is the argmax of each slot.")
    if kwargs.pop("num_return_sequences", 1) not in (None, 1):
      raise ValueError(f"num_return_sequences > 1: {one_pass} one output "
                       "per input.")
    for ignorable in ("use_cache", "output_scores", "early_stopping"):
      kwargs.pop(ignorable, None)
    if kwargs:
      raise TypeError(
          f"ElmerForConditionalGeneration.generate does not take "
          f"{sorted(kwargs)}; it takes input_ids, attention_mask, max_length "
          "or max_new_tokens (slots), length_mode, target_lengths, "
          "exit_threshold, collapse_repeats, return_dict_in_generate.")
    return input_ids.to(self.device)

  def _slots(self, max_length: Optional[int],
             max_new_tokens: Optional[int]) -> int:
    """Decoder slots: `max_length` and `max_new_tokens` both name them."""
    if None not in (max_length, max_new_tokens) and (
        max_length != max_new_tokens):
      raise ValueError(f"max_length={max_length} and max_new_tokens="
                       f"{max_new_tokens} both give the number of decoder "
                       "slots; pass one.")
    length = max_new_tokens or max_length or self.config.nar_max_length
    if not 2 <= length <= self.config.max_position_embeddings:
      raise ValueError(f"max_length={length}; the decoder holds 2.."
                       f"{self.config.max_position_embeddings} slots.")
    return length

__all__ = ["ElmerForConditionalGeneration", "ElmerOutput",
           "ElmerGenerateOutput"]
