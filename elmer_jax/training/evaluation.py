"""Held-out evaluation during training: the training objective on fixed
batches of a held-out split.

The eval batches are read once (no shuffling, the run's noise seed) and their
exit layers come from a fixed key, so the eval loss moves only with the
parameters and can pick the best checkpoint.
"""

import dataclasses
from typing import Callable, Optional

import jax
import numpy as np

from elmer_jax import distributed, objectives
from elmer_jax.data import pipeline
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training.train_step import (ObjectiveConfig, draw_exit_layers,
                                           make_loss_sums)

PREFIX = "eval/"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Evaluate every `every` steps (0: never) on `batches` batches of `split`
  of `mixture_or_task` (None: the training task)."""

  every: int = 0
  mixture_or_task: Optional[str] = None
  split: str = "validation"
  batches: int = 10


def make_eval_step(model_config: ElmerConfig, objective: ObjectiveConfig,
                   seed: int) -> Callable:
  """Returns eval_step(params, batch, index) -> metric sums (no dropout)."""
  loss_sums = make_loss_sums(model_config, objective)
  root = jax.random.split(jax.random.key(seed))[1]

  def eval_step(params, batch, index):
    key = jax.random.fold_in(root, index)
    exits = draw_exit_layers(key, batch, model_config.decoder_layers,
                             objective.exit_sampling)
    return loss_sums(params, batch, exits, key, deterministic=True)

  return eval_step


def read_batches(config: EvalConfig, train_task: str, lengths: dict,
                 batch_size: int, pack: bool, seed: int,
                 data_shards: int = 0, spare_slots: str = "decoder_length",
                 spare_labels: str = "ignore") -> list[dict]:
  """The process-local eval batches, read once (with the training run's
  spare slots, so the eval loss measures what training optimises)."""
  task = config.mixture_or_task or train_task
  datasets = pipeline.process_datasets(
      task, lengths, config.split, batch_size,
      pipeline.converter_for(task, pack, spare_slots, spare_labels),
      num_shards=data_shards, seed=seed,
      shuffle=False, num_epochs=1)
  shards = [list(dataset.take(config.batches).as_numpy_iterator())
            for dataset in datasets.values()]
  batches = [pipeline.side_by_side(parts) for parts in zip(*shards)]
  # Every process must run the same number of eval steps.
  batches = batches[:distributed.min_over_processes(len(batches))]
  if not batches:
    raise ValueError(
        f"EvalConfig: split {config.split!r} of {task!r} has fewer than one "
        f"batch of {batch_size} examples per input shard; use a smaller "
        "batch or another split (or EvalConfig.every=0 to turn evaluation "
        "off).")
  return batches


def evaluate(eval_step: Callable, params, batches: list[dict],
             data_sharding) -> dict[str, float]:
  """Metrics over all `batches`, named `eval/...`."""
  totals = None
  for index, local in enumerate(batches):
    sums = eval_step(params, pipeline.global_batch(local, data_sharding),
                     index)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  summary = objectives.summarize(jax.device_get(totals))
  return {PREFIX + k: v for k, v in summary.items() if np.isfinite(v)}
