"""One declarative map between our parameters and Hugging Face BART keys.

Each entry pairs a path in our (per-layer) parameter tree with an HF key and a
transform that knows how to move the array each way. Scanned parameters
(leading `layers` axis) are unstacked to the per-layer layout first, so the
map serves both layouts.
"""

import dataclasses
import re
from typing import Callable, Iterator, Mapping

import flax
import numpy as np

from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.params import flat_shapes
from elmer_jax.shapes import check_shapes

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Transform:
  """Moves an array from our layout to HF's (`to_hf`) and back."""

  to_hf: Callable[[Array, ElmerConfig], Array]
  from_hf: Callable[[Array, ElmerConfig], Array]


IDENTITY = Transform(lambda x, c: x, lambda x, c: x)
# nn.Dense kernels are (in, out); torch Linear weights are (out, in).
DENSE = Transform(lambda x, c: x.T, lambda x, c: x.T)
# Attention q/k/v kernels are (embed, heads, kv); out_proj is (heads, kv, embed).
HEADS_IN = Transform(
    lambda x, c: x.reshape(c.d_model, -1).T,
    lambda x, c: x.T.reshape(c.d_model, c.num_heads, c.head_dim))
HEADS_OUT = Transform(
    lambda x, c: x.reshape(-1, c.d_model).T,
    lambda x, c: x.T.reshape(c.num_heads, c.head_dim, c.d_model))
HEADS_BIAS = Transform(lambda x, c: x.reshape(-1),
                       lambda x, c: x.reshape(c.num_heads, c.head_dim))
# HF keeps final_logits_bias as a (1, vocab) buffer.
ROW = Transform(lambda x, c: x[None, :], lambda x, c: x[0])

# Tied copies of `model.shared.weight` that HF state dicts may also carry.
TIED_ALIASES = ("model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight", "lm_head.weight")


def _attention(ours: str, theirs: str):
  for proj in ("q_proj", "k_proj", "v_proj"):
    yield f"{ours}/{proj}/kernel", f"{theirs}.{proj}.weight", HEADS_IN
    yield f"{ours}/{proj}/bias", f"{theirs}.{proj}.bias", HEADS_BIAS
  yield f"{ours}/out_proj/kernel", f"{theirs}.out_proj.weight", HEADS_OUT
  yield f"{ours}/out_proj/bias", f"{theirs}.out_proj.bias", IDENTITY


def _norm(ours: str, theirs: str):
  yield f"{ours}/scale", f"{theirs}.weight", IDENTITY
  yield f"{ours}/bias", f"{theirs}.bias", IDENTITY


def _feed_forward():
  for fc in ("fc1", "fc2"):
    yield f"ffn/{fc}/kernel", f"{fc}.weight", DENSE
    yield f"ffn/{fc}/bias", f"{fc}.bias", IDENTITY


ENCODER_LAYER = (*_attention("self_attn", "self_attn"),
                 *_norm("self_attn_layer_norm", "self_attn_layer_norm"),
                 *_feed_forward(), *_norm("final_layer_norm",
                                          "final_layer_norm"))
DECODER_LAYER = (*ENCODER_LAYER,
                 *_attention("encoder_attn", "encoder_attn"),
                 *_norm("encoder_attn_layer_norm", "encoder_attn_layer_norm"))


def name_map(config: ElmerConfig) -> Iterator[tuple[str, str, Transform]]:
  """(our per-layer path, HF key, transform) for every parameter."""
  yield "shared/embedding", "model.shared.weight", IDENTITY
  yield "final_logits_bias", "final_logits_bias", ROW
  if config.soft_exit:
    # Released fine-tuned ELMER: BartForConditionalGeneration.concat_head.
    yield "concat_head", "concat_head.weight", DENSE
  for side, layer, count in (("encoder", ENCODER_LAYER, config.encoder_layers),
                             ("decoder", DECODER_LAYER, config.decoder_layers)):
    yield (f"{side}/embed_positions/embedding",
           f"model.{side}.embed_positions.weight", IDENTITY)
    yield from ((f"{side}/{p}", f"model.{side}.{k}", t) for p, k, t in
                _norm("layernorm_embedding", "layernorm_embedding"))
    for i in range(count):
      for ours, theirs, transform in layer:
        yield (f"{side}/layers_{i}/{ours}", f"model.{side}.layers.{i}.{theirs}",
               transform)


_STACKED = re.compile(r"^(encoder|decoder)/layers/(.*)$")
_PER_LAYER = re.compile(r"^(encoder|decoder)/layers_(\d+)/(.*)$")


def unstack_layers(flat: Mapping[str, Array]) -> dict[str, Array]:
  """Scanned layout (`side/layers/...`, leading axis) → `side/layers_i/...`."""
  out = {}
  for path, value in flat.items():
    match = _STACKED.match(path)
    if match is None:
      out[path] = value
      continue
    side, rest = match.groups()
    for i in range(value.shape[0]):
      out[f"{side}/layers_{i}/{rest}"] = value[i]
  return out


def stack_layers(flat: Mapping[str, Array]) -> dict[str, Array]:
  """Per-layer layout → scanned layout (inverse of `unstack_layers`)."""
  out, groups = {}, {}
  for path, value in flat.items():
    match = _PER_LAYER.match(path)
    if match is None:
      out[path] = value
      continue
    side, index, rest = match.groups()
    groups.setdefault(f"{side}/layers/{rest}", {})[int(index)] = value
  for path, layers in groups.items():
    out[path] = np.stack([layers[i] for i in range(len(layers))])
  return out


def _flat(params) -> dict[str, Array]:
  return {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(params, sep="/").items()}


def to_hf(params, config: ElmerConfig) -> dict[str, Array]:
  """Our parameter tree (either layout) → HF state dict (untied keys only)."""
  flat = unstack_layers(_flat(flax.core.unfreeze(params)))
  out = {}
  for ours, theirs, transform in name_map(config):
    if ours not in flat:
      raise ValueError(f"Parameter {ours!r} is missing from the checkpoint; "
                       f"the config expects it (ElmerConfig: {config}).")
    out[theirs] = np.ascontiguousarray(transform.to_hf(flat.pop(ours), config))
  if flat:
    raise ValueError(f"Parameters not in the HF name map: {sorted(flat)}.")
  return out


def expected_hf_shapes(config: ElmerConfig) -> dict[str, tuple[int, ...]]:
  """HF key → the shape a model of `config` needs (untied keys only)."""
  shapes = flat_shapes(config.replace(scan_layers=False))
  return {theirs: tuple(transform.to_hf(
      np.broadcast_to(np.float32(0), shapes[ours]), config).shape)
          for ours, theirs, transform in name_map(config)}


def from_hf(state_dict: Mapping[str, Array], config: ElmerConfig,
            where: str = "The Hugging Face state dict") -> dict:
  """HF state dict → our parameter tree in the layout of `config`.

  Every key and shape is checked in HF terms first; an error names every
  missing, unexpected or mis-shaped key with both shapes.
  """
  check_shapes(
      {k: tuple(np.shape(v)) for k, v in state_dict.items()},
      expected_hf_shapes(config), where, may_add=TIED_ALIASES,
      hint=f"The config (vocab_size={config.vocab_size}, d_model="
      f"{config.d_model}, ...) expects these shapes.")
  remaining = dict(state_dict)
  flat = {ours: transform.from_hf(np.asarray(remaining.pop(theirs)), config)
          for ours, theirs, transform in name_map(config)}
  for alias in TIED_ALIASES:
    if alias in remaining:
      tied = np.asarray(remaining.pop(alias))
      if not np.array_equal(tied, state_dict["model.shared.weight"]):
        raise ValueError(f"{alias!r} differs from 'model.shared.weight'; ELMER "
                         "ties input and output embeddings.")
  if config.scan_layers:
    flat = stack_layers(flat)
  return flax.traverse_util.unflatten_dict(flat, sep="/")

