"""Reading a Hugging Face BART/ELMER directory into our parameters, and
saving them as an orbax checkpoint the trainer takes as `init_checkpoint`.

Works for plain BART configs (the released RUCAIBox/elmer) and for our own
exports; `concat_head.weight` in the weights makes a soft-exit model. Every
key and shape is checked in Hugging Face terms before any conversion
(`param_map.from_hf`), so an error names the key and both shapes.
"""

import json
import logging
import os
from typing import Any, Optional

import numpy as np
import orbax.checkpoint as ocp
import tokenizers

from elmer_jax.data import vocabularies
from elmer_jax.export import hf_config, hf_weights, param_map
from elmer_jax.model.config import ElmerConfig


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


SHARED = "model.shared.weight"
CONCAT_HEAD = "concat_head.weight"
SOFT_EXIT_CHOICES = ("auto", "true", "false")


def untie_aliases(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`model.shared.weight` from whichever tied alias a file kept (safetensors
  writers keep one name of a shared tensor)."""
  if SHARED in state:
    return state
  for alias in param_map.TIED_ALIASES:
    if alias in state:
      logging.info("Tied embedding read from %r.", alias)
      return {**state, SHARED: state[alias]}
  return state


def choose_soft_exit(state: dict[str, np.ndarray], soft_exit: str,
                     hf_dir: str) -> tuple[bool, dict[str, np.ndarray]]:
  """(soft exit, state): `auto` follows `concat_head.weight`; `false` drops
  it with a warning (a released LPLM model may carry an untrained one)."""
  if soft_exit not in SOFT_EXIT_CHOICES:
    raise ValueError(f"soft_exit={soft_exit!r}; expected one of "
                     f"{SOFT_EXIT_CHOICES}.")
  present = CONCAT_HEAD in state
  if soft_exit == "true" and not present:
    raise ValueError(f"soft_exit=true but {hf_dir} has no {CONCAT_HEAD!r}; "
                     "use auto or false (fine-tuning adds a fresh "
                     "concat_head).")
  if soft_exit == "false" and present:
    logging.warning("soft_exit=false: dropping %s of %s (the model is "
                    "imported as an LPLM model).", CONCAT_HEAD, hf_dir)
    state = {k: v for k, v in state.items() if k != CONCAT_HEAD}
  chosen = present and soft_exit != "false"
  logging.info("soft_exit=%s (--soft_exit=%s; %s %s).", chosen, soft_exit,
               CONCAT_HEAD, "present" if present else "absent")
  return chosen, state


def read_hf_directory(hf_dir: str, scan_layers: bool = False,
                      soft_exit: str = "auto",
                      special_ids: Optional[dict[str, int]] = None
                      ) -> tuple[ElmerConfig, dict]:
  """(ElmerConfig, our parameter tree) for a Hugging Face directory.
  `special_ids` ({'mask_token_id': ..., 'unk_token_id': ...}) win over the
  config and the tokenizer files."""
  fields = {**hf_config.read(hf_dir), **(special_ids or {})}
  state = untie_aliases(hf_weights.read_state_dict(hf_dir))
  soft, state = choose_soft_exit(state, soft_exit, hf_dir)
  vocab = tokenizer_vocab(hf_dir)
  config = hf_config.from_hf(
      fields, os.path.join(hf_dir, "config.json"), soft_exit=soft,
      special_ids=vocab)
  config = config.replace(scan_layers=scan_layers)
  if vocab and len(vocab) != config.vocab_size:
    raise ValueError(
        f"The tokenizer files of {hf_dir} hold {len(vocab)} tokens but "
        f"config.json has vocab_size={config.vocab_size} (the embedding "
        "rows); they must match.")
  return config, param_map.from_hf(state, config, f"Weights of {hf_dir}")


def save_params(params: Any, output_dir: str) -> None:
  """An orbax checkpoint of {"params": params} at `output_dir`, readable by
  `checkpoints.restore_params` (TrainConfig.init_checkpoint)."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(output_dir), {"params": params})


def save_step(params: Any, run_dir: str, step: int = 0) -> None:
  """`run_dir/checkpoints/<step>` as the trainer writes it, with params only:
  generate, evaluate, export and `init_checkpoint` read it."""
  with ocp.CheckpointManager(
      os.path.join(os.path.abspath(run_dir), "checkpoints"),
      item_handlers=ocp.StandardCheckpointHandler()) as manager:
    manager.save(step, args=ocp.args.StandardSave({"params": params}))
    manager.wait_until_finished()


def find_vocabulary(hf_dir: str) -> Optional[str]:
  """BART's `vocab.json` + `merges.txt` (the folder), else a lone
  SentencePiece `*.model` in `hf_dir`; None if neither."""
  if all(os.path.exists(os.path.join(hf_dir, n))
         for n in vocabularies.BPE_FILES):
    return hf_dir
  models = [n for n in os.listdir(hf_dir) if n.endswith(".model")]
  return os.path.join(hf_dir, models[0]) if len(models) == 1 else None
