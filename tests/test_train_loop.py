"""The training loop end to end on 8 fake devices: learns, writes, resumes
(integration), and refuses a bad init checkpoint before training."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax import gin_utils, partitioning
from elmer_jax.model.params import init_params
from elmer_jax.training import evaluation, loop
from tests.helpers import checkpoint_params


def _configs(steps, **changes):
  gin_utils.parse(["experiments/demo_sample_tiny.gin"])
  model = gin_utils.macro("MODEL_CONFIG")
  train = gin_utils.macro("TRAIN_CONFIG")
  fields = dict(encoder_length=48, decoder_length=48, batch_size=8,
                steps=steps, log_every=10, checkpoint_every=10,
                mesh=partitioning.MeshConfig(ici=(2, 2, 2)))
  fields.update(changes)
  return model, train.__class__(**{**train.__dict__, **fields})


def _metrics(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # Over a minute: an 8-device run to a falling loss.
def test_sharded_run_learns_and_writes_everything(tmp_path):
  model, train = _configs(40)
  loop.train(model, train, str(tmp_path))
  metrics = _metrics(tmp_path)
  assert [m["step"] for m in metrics] == [10, 20, 30, 40]
  assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.5
  for key in ("accuracy", "average_exit_layer", "learning_rate", "grad_norm",
              "tokens_per_s", "step_time_s", "exit_layer_0/cross_entropy"):
    assert key in metrics[-1], key
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20", "30", "40"]
  assert sorted(os.listdir(tmp_path / "data")) == ["20", "30", "40"]
  assert os.listdir(tmp_path / "tensorboard")
  assert os.path.exists(tmp_path / "data" / "40" / "data_shards.json")


@pytest.mark.slow  # Kill/resume: two runs and a resumed one.
def test_resume_is_exact(tmp_path):
  model, train = _configs(30)
  loop.train(model, train, str(tmp_path / "straight"))
  _, first_part = _configs(20)
  loop.train(model, first_part, str(tmp_path / "resumed"))
  loop.train(model, train, str(tmp_path / "resumed"))
  straight, resumed = _metrics(tmp_path / "straight"), _metrics(
      tmp_path / "resumed")
  assert resumed[-1]["step"] == 30
  assert resumed[-1]["loss"] == straight[-1]["loss"]
  a = checkpoint_params(tmp_path / "straight", 30)
  b = checkpoint_params(tmp_path / "resumed", 30)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _truncate_largest_file(directory):
  files = [os.path.join(root, name) for root, _, names in os.walk(directory)
           for name in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


@pytest.mark.slow  # Kill/resume: a damaged latest checkpoint.
def test_truncated_latest_checkpoint_is_set_aside_and_the_one_before_resumes(
    tmp_path, capsys):
  model, train = _configs(30)
  loop.train(model, train, str(tmp_path))
  first = _metrics(tmp_path)
  _truncate_largest_file(tmp_path / "checkpoints" / "30")
  capsys.readouterr()
  loop.train(model, train, str(tmp_path))
  out = capsys.readouterr().out
  assert "Skipping checkpoint step 30: it does not read back" in out
  assert "Resumed from step 20" in out
  broken = os.listdir(tmp_path / "checkpoints_broken")
  assert len(broken) == 1 and broken[0].startswith("30-")
  again = _metrics(tmp_path)
  # Each step once (the rows after step 20 were dropped and logged again),
  # and steps 21..30 repeated exactly.
  assert [m["step"] for m in again] == [m["step"] for m in first]
  assert again[-1]["loss"] == first[-1]["loss"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20", "30"]
  checkpoint_params(tmp_path, 30)  # The new step 30 reads back.

  for step in (10, 20, 30):  # None left to resume from: no fresh start.
    _truncate_largest_file(tmp_path / "checkpoints" / str(step))
  with pytest.raises(FileNotFoundError, match="No checkpoint in .* reads back "
                     "whole; the broken ones are in .*checkpoints_broken"):
    loop.train(model, train, str(tmp_path))
  assert len(os.listdir(tmp_path / "checkpoints_broken")) == 4


@pytest.mark.integration
def test_restoring_another_model_names_the_parameter(tmp_path):
  model, train = _configs(10)
  loop.train(model, train, str(tmp_path))
  wider = model.replace(d_ff=model.d_ff * 2)
  with pytest.raises(ValueError, match=(
      r"checkpoints/10: 'decoder/layers_0/ffn/fc1/bias' has shape \(256,\) "
      r"but the model expects \(512,\)")):
    loop.train(wider, train.__class__(**{**train.__dict__, "steps": 20}),
               str(tmp_path))


@pytest.mark.slow  # Over a minute: the train command in a subprocess, twice.
def test_entry_point_writes_config_and_rejects_unknown_bindings(tmp_path):
  command = [sys.executable, "-m", "elmer_jax.train",
             "--gin_file=experiments/demo_sample_tiny.gin",
             f"--model_dir={tmp_path}", "--gin.loop.TrainConfig.steps=2",
             "--gin.loop.TrainConfig.log_every=1",
             "--gin.loop.TrainConfig.encoder_length=32",
             "--gin.loop.TrainConfig.decoder_length=32"]
  subprocess.run(command, check=True, capture_output=True, text=True,
                 timeout=600)
  assert "vocab_size = 8000" in (tmp_path / "config.gin").read_text()
  bad = subprocess.run(command + ["--gin.loop.TrainConfig.stepz=3"],
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "stepz" in bad.stderr
  missing = subprocess.run(command[:3], capture_output=True, text=True,
                           timeout=600)
  assert missing.returncode != 0 and "--model_dir is required" in missing.stderr


@pytest.mark.integration
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  model, train = _configs(10, checkpoint_every=5)
  loop.train(model, train, str(tmp_path))
  exploding = train.optimizer.__class__(**{
      **train.optimizer.__dict__, "learning_rate": 1e30, "clip_norm": 1e30,
      "warmup_steps": 0})
  diverging = train.__class__(**{**train.__dict__, "steps": 20,
                                 "optimizer": exploding})
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"at step 1[1-9]; stopping.*still step 10"):
    loop.train(model, diverging, str(tmp_path))
  assert max(int(s) for s in os.listdir(tmp_path / "checkpoints")) == 10


@pytest.mark.slow  # Over a minute: two runs with evaluation.
def test_eval_keeps_the_best_checkpoint_and_init_checkpoint_starts_a_run(
    tmp_path):
  model, train = _configs(
      20, checkpoint_every=5, keep_checkpoints=1, keep_best_checkpoints=1,
      eval=evaluation.EvalConfig(every=5, batches=2))
  loop.train(model, train, str(tmp_path / "pretrain"))
  evals = {m["step"]: m["eval/loss"] for m in _metrics(tmp_path / "pretrain")
           if "eval/loss" in m}
  assert sorted(evals) == [5, 10, 15, 20]
  best = min(evals, key=evals.get)
  assert sorted(os.listdir(tmp_path / "pretrain" / "checkpoints")) == sorted(
      {str(best), "20"})

  frozen = train.optimizer.__class__(**{**train.optimizer.__dict__,
                                        "learning_rate": 0.0})
  _, finetune = _configs(1, optimizer=frozen, checkpoint_every=1,
                         init_checkpoint=str(tmp_path / "pretrain"))
  loop.train(model, finetune, str(tmp_path / "finetune"))
  start = checkpoint_params(tmp_path / "pretrain", 20)
  end = checkpoint_params(tmp_path / "finetune", 1)
  for key in start:
    np.testing.assert_array_equal(start[key], end[key], err_msg=key)


def test_unreadable_or_mismatched_init_checkpoint_fails_before_training(
    tmp_path):
  model, train = _configs(10, init_checkpoint=str(tmp_path / "nothing"))
  with pytest.raises(FileNotFoundError, match=r"Init checkpoint .*nothing.* "
                     r"is not readable: expected an orbax checkpoint"):
    loop.train(model, train, str(tmp_path / "run"))
  wider = model.replace(d_ff=model.d_ff * 2)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "wider",
                      {"params": init_params(wider, jax.random.key(0))})
  _, train = _configs(10, init_checkpoint=str(tmp_path / "wider"))
  with pytest.raises(ValueError, match=(
      r"Init checkpoint .*wider: 'decoder/layers_0/ffn/fc1/bias' has shape "
      r"\(512,\) but the model expects \(256,\)")):
    loop.train(model, train, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
