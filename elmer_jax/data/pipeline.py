"""Batches for training: seqio datasets split into input shards, resumable.

The input is split into `num_shards` shards (default: one per process), dealt
out in order: process p of P reads shards p·S/P … (p+1)·S/P − 1 and yields
their batches side by side as its part of the global batch; the trainer
assembles global arrays from these process-local batches. The global batch
depends only on the shard count, not on how many processes read it, so a run
may resume on any process count that divides its shard count.

Resuming: the tf.data iterator state (shuffle buffers, the position in the
source files, seqio's per-example noise seeds) is checkpointed with
`tf.train.Checkpoint`, one file per shard. Restoring it continues with
exactly the batches the uninterrupted run would have seen, at the cost of
saving a buffer, not of replaying the data; a replay (`skip`) would re-read
and re-noise every example before the step.
"""

import json
import os
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from elmer_jax.data.feature_converter import ElmerFeatureConverter
from elmer_jax.data.vocab_tables import special_ids


def process_shard() -> seqio.ShardInfo:
  """This process's shard of the input, one shard per process."""
  return process_shards()[0]


def process_shards(num_shards: int = 0) -> list[seqio.ShardInfo]:
  """The input shards this process reads: `num_shards` (0: one per process)
  dealt out to the processes in order."""
  import jax  # Imported here so data tools need no accelerator runtime.
  count = jax.process_count()
  num_shards = num_shards or count
  if num_shards % count:
    raise ValueError(
        f"{num_shards} input shards cannot be dealt out evenly to {count} "
        f"processes: use a multiple of {count} (TrainConfig.data_shards).")
  per_process = num_shards // count
  first = jax.process_index() * per_process
  return [seqio.ShardInfo(index=first + i, num_shards=num_shards)
          for i in range(per_process)]


def converter_for(mixture_or_task: str, pack: bool = False,
                  spare_slots: str = "decoder_length",
                  spare_labels: str = "ignore") -> ElmerFeatureConverter:
  """The feature converter with the special ids of the task's vocabulary
  (`spare_slots`, `spare_labels`: see feature_converter.py)."""
  vocab = seqio.get_mixture_or_task(mixture_or_task).output_features[
      "targets"].vocabulary
  ids = special_ids(vocab)
  return ElmerFeatureConverter(ids["pad"], ids["bos"], ids["mask"], pack=pack,
                               spare_slots=spare_slots,
                               spare_labels=spare_labels, eos_id=vocab.eos_id)


def get_dataset(mixture_or_task: str, task_feature_lengths: Mapping[str, int],
                split: str, global_batch_size: int,
                feature_converter: seqio.FeatureConverter,
                seed: Optional[int] = None, shuffle: bool = True,
                num_epochs: Optional[int] = None,
                shard: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
  """Batches of `global_batch_size / num_shards` examples of one shard
  (default: this process's, one shard per process).

  `num_epochs=None` repeats forever (training); a fixed `seed` makes the
  order and the noise reproducible.
  """
  shard = shard or process_shard()
  if global_batch_size % shard.num_shards:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by the "
        f"{shard.num_shards} input shards; use a multiple of "
        f"{shard.num_shards}.")
  # Not seqio.get_dataset: it would cache small datasets in memory after the
  # (random) noising, freezing the noise across epochs.
  dataset = seqio.get_mixture_or_task(mixture_or_task).get_dataset(
      dict(task_feature_lengths), split=split, use_cached=False,
      shuffle=shuffle, seed=seed, num_epochs=num_epochs,
      shard_info=shard if shard.num_shards > 1 else None,
      try_in_mem_cache=False)
  dataset = feature_converter(dataset, dict(task_feature_lengths))
  dataset = dataset.batch(global_batch_size // shard.num_shards,
                          drop_remainder=True)
  if isinstance(feature_converter, ElmerFeatureConverter):
    dataset = dataset.map(feature_converter.finish_batch)
  return dataset.prefetch(tf.data.AUTOTUNE)


def process_datasets(mixture_or_task: str,
                     task_feature_lengths: Mapping[str, int], split: str,
                     global_batch_size: int,
                     feature_converter: seqio.FeatureConverter,
                     num_shards: int = 0, **kwargs
                     ) -> dict[seqio.ShardInfo, tf.data.Dataset]:
  """`get_dataset` for each of this process's shards (`process_shards`)."""
  return {shard: get_dataset(mixture_or_task, task_feature_lengths, split,
                             global_batch_size, feature_converter,
                             shard=shard, **kwargs)
          for shard in process_shards(num_shards)}


def side_by_side(batches: Sequence[Mapping[str, np.ndarray]]
                 ) -> dict[str, np.ndarray]:
  """Shards' batches joined in shard order: this process's batch."""
  if len(batches) == 1:
    return dict(batches[0])
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def global_batch(local_batch: Mapping[str, np.ndarray], sharding) -> dict:
  """Process-local batches → global `jax.Array`s laid out by `sharding`
  (batch on its first axis); every process passes its own part."""
  import jax
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


class ResumableIterator(Iterator[dict[str, np.ndarray]]):
  """This process's NumPy batches from its shards' datasets, with save and
  restore of every shard's iterator state."""

  def __init__(self, datasets: Mapping[seqio.ShardInfo, tf.data.Dataset]):
    if not isinstance(datasets, Mapping):  # Sorting a dataset never ends.
      raise TypeError(
          f"ResumableIterator takes {{ShardInfo: tf.data.Dataset}} (what "
          f"process_datasets returns), not a {type(datasets).__name__}.")
    self._shards = sorted(datasets, key=lambda shard: shard.index)
    self._num_shards = self._shards[0].num_shards
    self._iterators = [iter(datasets[shard]) for shard in self._shards]
    self._checkpoints = [tf.train.Checkpoint(iterator=it)
                         for it in self._iterators]

  def __next__(self) -> dict[str, np.ndarray]:
    return side_by_side([{k: v.numpy() for k, v in next(it).items()}
                         for it in self._iterators])

  @staticmethod
  def _prefix(directory: str, shard: seqio.ShardInfo) -> str:
    return os.path.join(directory, f"shard_{shard.index}")

  def save(self, directory: str) -> None:
    """Writes the state of this process's shards under `directory`."""
    tf.io.gfile.makedirs(directory)
    for shard, checkpoint in zip(self._shards, self._checkpoints):
      checkpoint.write(self._prefix(directory, shard))
    if self._shards[0].index == 0:
      with tf.io.gfile.GFile(os.path.join(directory, "data_shards.json"),
                             "w") as f:
        json.dump({"num_shards": self._num_shards}, f)

  def restore(self, directory: str) -> None:
    """Continues each shard from its state saved in `directory` (by any
    process: the shard count must match, not the process count)."""
    meta_path = os.path.join(directory, "data_shards.json")
    if not tf.io.gfile.exists(meta_path):
      raise FileNotFoundError(f"No data iterator state in {directory} "
                              f"({meta_path} is missing).")
    with tf.io.gfile.GFile(meta_path) as f:
      saved = json.load(f)["num_shards"]
    if saved != self._num_shards:
      raise ValueError(
          f"The data iterator in {directory} was saved with {saved} input "
          f"shards, but this run reads {self._num_shards}: each shard "
          f"resumes its own state, so set TrainConfig.data_shards={saved} "
          f"(any process count that divides {saved} can resume it), or start "
          "the data from scratch, accepting repeated examples.")
    for shard, checkpoint in zip(self._shards, self._checkpoints):
      checkpoint.read(self._prefix(directory, shard)).assert_consumed()
