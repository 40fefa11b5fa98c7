"""Determinism, exact resume and per-process sharding of the input pipeline."""

import numpy as np
import pytest
import seqio

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax.data import pipeline

TASK = "sample_wiki_elmer"
LENGTHS = {"inputs": 48, "targets": 48}


def _iterator(seed, shard=seqio.ShardInfo(0, 1), batch=4, task=TASK,
              shards=None):
  """The iterator of a process reading `shards` (default: just `shard`)."""
  return pipeline.ResumableIterator({
      shard: pipeline.get_dataset(task, LENGTHS, "train", batch,
                                  pipeline.converter_for(task), seed=seed,
                                  shard=shard)
      for shard in shards or [shard]})


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def seed_5(tmp_path_factory):
  """Six batches of one seed-5 iterator, its state saved after the third
  (one pipeline shared by the determinism and resume tests)."""
  path = str(tmp_path_factory.mktemp("data") / "data")
  straight = _iterator(seed=5)
  first = [next(straight) for _ in range(3)]
  straight.save(path)
  return first, [next(straight) for _ in range(3)], path


def test_same_seed_same_batches_and_noise(seed_5):
  first, _, _ = seed_5
  again = _iterator(seed=5)
  for batch in first:
    _assert_same(batch, next(again))
  other = next(_iterator(seed=4))
  assert not np.array_equal(other["encoder_input_tokens"],
                            first[0]["encoder_input_tokens"])


def test_resume_continues_with_the_uninterrupted_batches(seed_5):
  _, expected, path = seed_5
  resumed = _iterator(seed=5)
  resumed.restore(path)
  for batch in expected:
    _assert_same(next(resumed), batch)


def test_resume_with_another_shard_count_is_refused(seed_5, tmp_path):
  other = _iterator(seed=5, shard=seqio.ShardInfo(0, 2), batch=4)
  with pytest.raises(ValueError, match=r"saved with 1 input shards.*reads 2.*"
                     r"data_shards=1"):
    other.restore(seed_5[2])
  with pytest.raises(FileNotFoundError, match="data_shards.json"):
    other.restore(str(tmp_path / "nothing"))


@pytest.mark.integration  # 2 -> 3 -> 1 processes; test_processes_read_different_shards stays.
def test_shards_rebalance_between_process_counts(tmp_path):
  """One process reading both of 2 shards yields the two processes' batches
  side by side, and either layout resumes the other's saved state."""
  both = [seqio.ShardInfo(0, 2), seqio.ShardInfo(1, 2)]
  one_process = _iterator(seed=8, shards=both)
  two_processes = [_iterator(seed=8, shard=s) for s in both]
  _assert_same(next(one_process), pipeline.side_by_side(
      [next(p) for p in two_processes]))
  one_process.save(str(tmp_path / "by_one"))
  for process in two_processes:
    process.save(str(tmp_path / "by_two"))
  by_one = [next(one_process) for _ in range(2)]
  by_two = pipeline.side_by_side([next(p) for p in two_processes])

  for process in two_processes:  # Back to step 1, from the other layout.
    process.restore(str(tmp_path / "by_one"))
  for batch in by_one:
    _assert_same(pipeline.side_by_side([next(p) for p in two_processes]),
                 batch)
  one_process.restore(str(tmp_path / "by_two"))
  _assert_same(next(one_process), by_two)


def test_shards_are_dealt_to_processes_in_order(monkeypatch):
  import jax
  assert pipeline.process_shards() == [seqio.ShardInfo(0, 1)]
  assert pipeline.process_shards(3) == [seqio.ShardInfo(i, 3)
                                        for i in range(3)]
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert pipeline.process_shards() == [seqio.ShardInfo(1, 2)]
  assert pipeline.process_shards(4) == [seqio.ShardInfo(2, 4),
                                        seqio.ShardInfo(3, 4)]
  with pytest.raises(ValueError, match="3 input shards cannot be dealt out "
                     "evenly to 2 processes: use a multiple of 2"):
    pipeline.process_shards(3)


def test_processes_read_different_shards():
  a = next(_iterator(seed=6, shard=seqio.ShardInfo(0, 2), batch=4))
  b = next(_iterator(seed=6, shard=seqio.ShardInfo(1, 2), batch=4))
  assert a["decoder_target_tokens"].shape[0] == 2  # 4 global / 2 processes.
  targets_a = {tuple(r) for r in a["decoder_target_tokens"]}
  targets_b = {tuple(r) for r in b["decoder_target_tokens"]}
  assert not targets_a & targets_b


def test_batch_must_divide_among_processes():
  with pytest.raises(ValueError,
                     match="global_batch_size=5 .* 2 input shards"):
    _iterator(seed=0, shard=seqio.ShardInfo(0, 2), batch=5)


def test_a_bare_dataset_is_refused_not_iterated_forever():
  dataset = pipeline.get_dataset(TASK, LENGTHS, "train", 4,
                                 pipeline.converter_for(TASK), seed=0)
  with pytest.raises(TypeError, match="ShardInfo.*process_datasets"):
    pipeline.ResumableIterator(dataset)


def test_global_batch_from_process_local_data():
  import jax
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))
  local = next(_iterator(seed=7, batch=8))
  arrays = pipeline.global_batch(local, sharding)
  assert arrays["decoder_target_tokens"].shape == (8, 48)
  assert len(arrays["decoder_target_tokens"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(arrays["decoder_target_tokens"]),
                                local["decoder_target_tokens"])


def test_local_files_task_from_gin():
  from elmer_jax import gin_utils
  gin_utils.parse(["data/local_files.gin"])
  name = gin_utils.macro("MIXTURE_OR_TASK_NAME")
  assert name == "local_files_elmer"
  batch = next(_iterator(seed=0, batch=2, task=name))
  assert batch["decoder_loss_weights"].sum() > 0
