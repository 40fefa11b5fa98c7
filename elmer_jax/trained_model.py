"""A trained run, ready for inference: config, parameters, vocabulary.

Generation and evaluation read the run's own `config.gin` (written by the
trainer) so the model is built exactly as it was trained; gin files and
bindings given on the command line come after it and may override.
"""

import dataclasses
import logging
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import seqio
import tensorflow as tf

from elmer_jax import gin_utils, run_config
from elmer_jax.data import vocabularies
from elmer_jax.data.vocab_tables import check_config_matches
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.params import abstract_params
from elmer_jax.training import checkpoints


IMPORT_SLOTS = 64


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ElmerConfig
  params: Any
  vocabulary: seqio.Vocabulary
  train_config: Any  # loop.TrainConfig of the run.
  checkpoint: str  # The step directory the parameters came from.
  # How the run trained its decoder's spare slots (TrainConfig.spare_slots);
  # 'none' also for runs whose config.gin predates the option.
  spare_slots: str = "decoder_length"

  @property
  def slots(self) -> int:
    """The decoder slots the model was trained with: generation's default
    (an import, which has no training config: 64, capped by the positions)."""
    if self.train_config is None:
      return min(IMPORT_SLOTS, self.config.max_positions)
    return self.train_config.decoder_length


def parse_run_config(model_dir: str, gin_files: Sequence[str] = (),
                     gin_bindings: Sequence[str] = (),
                     search_paths: Sequence[str] = ()) -> None:
  """Parses `<model_dir>/config.gin`, then `gin_files` and `gin_bindings`.
  The run's own copy of its vocabulary is used wherever the run now lives."""
  path = os.path.join(model_dir, "config.gin")
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} is missing: --model_dir must be a "
                            "training run's directory (or what "
                            "`python -m elmer_jax.import_hf` writes).")
  copy = vocabularies.run_copy(model_dir)
  gin_utils.parse([path, *gin_files],
                  [*([f"VOCABULARY = {copy!r}"] if copy else []),
                   *gin_bindings], search_paths)


def load(model_dir: str, step: Optional[int] = None, *,
         use_vocabulary: run_config.UseVocabulary) -> TrainedModel:
  """The run's model at `step` (default: best by eval loss, else latest).
  Call after `parse_run_config`. The vocabulary is the run's `VOCABULARY`,
  else its task's; a run without a training config (an import) has
  `train_config` None. The tasks must be registered (`import tasks`); they
  get the vocabulary through `use_vocabulary` (`tasks.use_vocabulary`)."""
  config = gin_utils.macro("MODEL_CONFIG")
  path = run_config.optional_macro("VOCABULARY")
  vocabulary = run_config.activate(path, use_vocabulary) if path else None
  train_config = run_config.optional_macro("TRAIN_CONFIG")
  if vocabulary is None:
    if train_config is None:
      raise ValueError(f"{model_dir}/config.gin names no vocabulary: bind "
                       "VOCABULARY (--gin.VOCABULARY=\"'path'\").")
    name = train_config.mixture_or_task
    if name not in seqio.MixtureRegistry.names() | seqio.TaskRegistry.names():
      raise ValueError(
          f"{model_dir}/config.gin trained on {name!r}, which is not "
          "registered here, and names no VOCABULARY to decode with: import "
          "the module that registers the task, or bind the vocabulary the run "
          "was trained with (--gin.VOCABULARY=\"'path'\").")
    vocabulary = seqio.get_mixture_or_task(
        name).output_features["targets"].vocabulary
  check_config_matches(config, vocabulary)
  checkpoint = checkpoints.inference_step(model_dir, step)
  params = checkpoints.load_params(checkpoint,
                                   nn.unbox(abstract_params(config)))
  spare_slots = _trained_spare_slots(model_dir, train_config)
  if spare_slots == "none":
    logging.warning(
        "%s was trained without spare decoder slots (its config.gin %s): it "
        "never learned to end its output among more slots than the target "
        "has, so max-length decoding tends to run on past the answer. It "
        "generates as before; to fix it, fine-tune again with the current "
        "runs/finetune.gin or --gin.loop.TrainConfig.spare_slots="
        "\"'decoder_length'\".", model_dir,
        "sets TrainConfig.spare_slots='none'" if "spare_slots" in
        _run_config_text(model_dir) else "predates TrainConfig.spare_slots")
  return TrainedModel(config, params, vocabulary, train_config, checkpoint,
                      spare_slots)


def _run_config_text(model_dir: str) -> str:
  with tf.io.gfile.GFile(os.path.join(model_dir, "config.gin")) as f:
    return f.read()


def _trained_spare_slots(model_dir: str, train_config: Any) -> str:
  """A config.gin that never names spare_slots was written before the
  option existed, when no run had spare slots; an import (no training
  config) is taken as the released code trained it, with the batch's
  longest target."""
  if train_config is None:
    return "batch"
  if "spare_slots" not in _run_config_text(model_dir):
    return "none"
  return train_config.spare_slots
