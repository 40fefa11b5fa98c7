"""Batches for training: seqio datasets sharded per process, resumable.

Each process reads its own shard (`seqio.ShardInfo` from the JAX process
index/count) and yields its part of the global batch; the trainer assembles
global arrays from these process-local batches.

Resuming: the tf.data iterator state (shuffle buffers, the position in the
source files, seqio's per-example noise seeds) is checkpointed with
`tf.train.Checkpoint`, one file per process. Restoring it continues with
exactly the batches the uninterrupted run would have seen, at the cost of
saving a buffer, not of replaying the data; a replay (`skip`) would re-read
and re-noise every example before the step.
"""

import json
import os
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from elmer_jax.data.feature_converter import ElmerFeatureConverter
from elmer_jax.data.vocab_tables import special_ids


def process_shard() -> seqio.ShardInfo:
  """This process's shard of the input, from the JAX runtime."""
  import jax  # Imported here so data tools need no accelerator runtime.
  return seqio.ShardInfo(index=jax.process_index(),
                         num_shards=jax.process_count())


def converter_for(mixture_or_task: str,
                  pack: bool = False) -> ElmerFeatureConverter:
  """The feature converter with the special ids of the task's vocabulary."""
  vocab = seqio.get_mixture_or_task(mixture_or_task).output_features[
      "targets"].vocabulary
  ids = special_ids(vocab)
  return ElmerFeatureConverter(ids["pad"], ids["bos"], ids["mask"], pack=pack)


def get_dataset(mixture_or_task: str, task_feature_lengths: Mapping[str, int],
                split: str, global_batch_size: int,
                feature_converter: seqio.FeatureConverter,
                seed: Optional[int] = None, shuffle: bool = True,
                num_epochs: Optional[int] = None,
                shard: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
  """Process-local batches of `global_batch_size / num_shards` examples.

  `num_epochs=None` repeats forever (training); a fixed `seed` makes the
  order and the noise reproducible.
  """
  shard = shard or process_shard()
  if global_batch_size % shard.num_shards:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by the "
        f"{shard.num_shards} input processes; use a multiple of "
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
  return dataset.prefetch(tf.data.AUTOTUNE)


def global_batch(local_batch: Mapping[str, np.ndarray], sharding) -> dict:
  """Process-local batches → global `jax.Array`s laid out by `sharding`
  (batch on its first axis); every process passes its own part."""
  import jax
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


class ResumableIterator(Iterator[dict[str, np.ndarray]]):
  """NumPy batches from a dataset, with save/restore of the iterator state."""

  def __init__(self, dataset: tf.data.Dataset,
               shard: Optional[seqio.ShardInfo] = None):
    self._shard = shard or process_shard()
    self._iterator = iter(dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __next__(self) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def _prefix(self, directory: str) -> str:
    return os.path.join(directory, f"process_{self._shard.index}")

  def save(self, directory: str) -> None:
    """Writes this process's iterator state under `directory`."""
    tf.io.gfile.makedirs(directory)
    self._checkpoint.write(self._prefix(directory))
    with tf.io.gfile.GFile(os.path.join(directory, "data_shards.json"),
                           "w") as f:
      json.dump({"num_shards": self._shard.num_shards}, f)

  def restore(self, directory: str) -> None:
    """Continues from the state saved in `directory` by the same shard."""
    meta_path = os.path.join(directory, "data_shards.json")
    if not tf.io.gfile.exists(meta_path):
      raise FileNotFoundError(f"No data iterator state in {directory} "
                              f"({meta_path} is missing).")
    with tf.io.gfile.GFile(meta_path) as f:
      saved = json.load(f)["num_shards"]
    if saved != self._shard.num_shards:
      raise ValueError(
          f"The data iterator in {directory} was saved by {saved} input "
          f"processes, but this run has {self._shard.num_shards}; each "
          "process resumes its own shard, so the count must match (or start "
          "the data from scratch, accepting repeated examples).")
    self._checkpoint.read(self._prefix(directory)).assert_consumed()
