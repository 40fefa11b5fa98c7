"""Reading a Hugging Face BART/ELMER directory into our parameters, and
saving them as an orbax checkpoint the trainer takes as `init_checkpoint`.

Works for plain BART configs (the released RUCAIBox/elmer) and for our own
exports; `concat_head.weight` in the weights makes a soft-exit model. Every
key and shape is checked in Hugging Face terms before any conversion, so an
error names the key and both shapes.
"""

import json
import os
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import tokenizers

from elmer_jax.export import hf_config, hf_weights, param_map
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.params import flat_shapes


def expected_hf_shapes(config: ElmerConfig) -> dict[str, tuple[int, ...]]:
  """HF key → the shape a model of `config` needs (untied keys only)."""
  shapes = flat_shapes(config.replace(scan_layers=False))
  return {theirs: tuple(transform.to_hf(
      np.broadcast_to(np.float32(0), shapes[ours]), config).shape)
          for ours, theirs, transform in param_map.name_map(config)}


def tokenizer_vocab(hf_dir: str) -> dict[str, int]:
  """Token → id from tokenizer.json or vocab.json (empty if neither)."""
  path = os.path.join(hf_dir, "tokenizer.json")
  if os.path.exists(path):
    return tokenizers.Tokenizer.from_file(path).get_vocab(
        with_added_tokens=True)
  path = os.path.join(hf_dir, "vocab.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def check_state_dict(state: dict[str, np.ndarray], config: ElmerConfig,
                     where: str) -> None:
  """Raises naming the first missing key or the first wrong shape."""
  for key, shape in expected_hf_shapes(config).items():
    if key not in state:
      raise ValueError(f"{where} lacks {key!r} (expected shape {shape}).")
    if tuple(state[key].shape) != shape:
      raise ValueError(
          f"{where}: {key!r} has shape {tuple(state[key].shape)}; the config "
          f"(vocab_size={config.vocab_size}, d_model={config.d_model}, ...) "
          f"expects {shape}.")


def read_hf_directory(hf_dir: str, scan_layers: bool = False
                      ) -> tuple[ElmerConfig, dict]:
  """(ElmerConfig, our parameter tree) for a Hugging Face directory."""
  fields = hf_config.read(hf_dir)
  state = hf_weights.read_state_dict(hf_dir)
  vocab = tokenizer_vocab(hf_dir)
  config = hf_config.from_hf(
      fields, os.path.join(hf_dir, "config.json"),
      soft_exit="concat_head.weight" in state, special_ids=vocab)
  config = config.replace(scan_layers=scan_layers)
  if vocab and len(vocab) != config.vocab_size:
    raise ValueError(
        f"The tokenizer files of {hf_dir} hold {len(vocab)} tokens but "
        f"config.json has vocab_size={config.vocab_size} (the embedding "
        "rows); they must match.")
  check_state_dict(state, config, f"Weights of {hf_dir}")
  return config, param_map.from_hf(state, config)


def save_params(params: Any, output_dir: str) -> None:
  """An orbax checkpoint of {"params": params} at `output_dir`, readable by
  `checkpoints.restore_params` (TrainConfig.init_checkpoint)."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(output_dir), {"params": params})
