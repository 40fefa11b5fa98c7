"""SIGKILL mid-run, restart: the run ends exactly as an uninterrupted one,
also when the kill lands in the middle of an asynchronous checkpoint save."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import checkpoint_params, subprocess_env

pytestmark = pytest.mark.slow

STEPS = 40
ENV = subprocess_env(1)


def _command(model_dir, checkpoint_every=10):
  return [sys.executable, "-m", "elmer_jax.train",
          "--gin_file=experiments/demo_sample_tiny.gin",
          f"--model_dir={model_dir}",
          f"--gin.loop.TrainConfig.steps={STEPS}",
          "--gin.loop.TrainConfig.log_every=1",
          f"--gin.loop.TrainConfig.checkpoint_every={checkpoint_every}",
          "--gin.loop.TrainConfig.encoder_length=32",
          "--gin.loop.TrainConfig.decoder_length=32"]


def _losses(model_dir):
  """Per-step loss; a step logged twice (before and after the kill) keeps
  its last value."""
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return {m["step"]: m["loss"] for m in map(json.loads, f)}


def _logged_steps(model_dir):
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for _ in f)


def _unfinished_saves(model_dir):
  """Checkpoint directories orbax has not yet committed (renamed to the
  step number)."""
  directory = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return [n for n in os.listdir(directory) if not n.isdigit()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("straight")
  subprocess.run(_command(model_dir), check=True, env=ENV, capture_output=True)
  return model_dir


def _assert_matches(straight, killed):
  expected, got = _losses(straight), _losses(killed)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    assert got[step] == expected[step], step
  a, b = checkpoint_params(straight, STEPS), checkpoint_params(killed, STEPS)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigkill_then_restart_matches_the_straight_run(straight, tmp_path):
  killed = tmp_path / "killed"
  process = subprocess.Popen(_command(killed), env=ENV,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while _logged_steps(killed) < 25 and time.time() < deadline:
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 25 <= _logged_steps(killed) < STEPS
  subprocess.run(_command(killed), check=True, env=ENV, capture_output=True)
  _assert_matches(straight, killed)
  # Steps 21..25+ were logged before the kill and again after resuming from
  # step 20: each appears once.
  assert _logged_steps(killed) == STEPS


def test_sigkill_during_an_async_save_resumes_from_the_previous_step(
    straight, tmp_path):
  """Saves every step; the kill comes as soon as a save is seen in flight
  (a temporary directory orbax has not yet renamed to its step)."""
  killed = tmp_path / "killed"
  process = subprocess.Popen(_command(killed, checkpoint_every=1), env=ENV,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if _logged_steps(killed) >= 5 and _unfinished_saves(killed):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.0005)
  process.wait()
  half_written = _unfinished_saves(killed)
  assert half_written, "the kill did not land during a save"
  complete = [int(n) for n in os.listdir(killed / "checkpoints") if n.isdigit()]
  half_step = int(half_written[0].split(".")[0])
  assert max(complete) < half_step

  restart = subprocess.run(_command(killed, checkpoint_every=1), check=True,
                           env=ENV, capture_output=True, text=True)
  assert f"Resumed from step {max(complete)} " in restart.stdout
  _assert_matches(straight, killed)


def test_sigterm_saves_stops_cleanly_and_the_restart_matches(straight,
                                                             tmp_path):
  """Preemption: SIGTERM makes the run save the step it is at and exit 0."""
  stopped = tmp_path / "stopped"
  process = subprocess.Popen(_command(stopped), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
  deadline = time.time() + 300
  while _logged_steps(stopped) < 15 and time.time() < deadline:
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  stdout, _ = process.communicate(timeout=120)
  assert process.returncode == 0
  saved = int(stdout.split("SIGTERM: saved step ")[1].split()[0])
  assert 15 <= saved < STEPS
  assert max(int(n) for n in os.listdir(stopped / "checkpoints")) == saved
  subprocess.run(_command(stopped), check=True, env=ENV, capture_output=True)
  _assert_matches(straight, stopped)


def test_ctrl_c_saves_like_sigterm_and_each_step_is_logged_once(straight,
                                                                tmp_path):
  """SIGINT (Ctrl-C) saves the step it is at and exits 0; after the rerun
  resumes, metrics.jsonl holds every step once and matches the straight run."""
  stopped = tmp_path / "stopped"
  process = subprocess.Popen(_command(stopped, checkpoint_every=7), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  deadline = time.time() + 300
  while _logged_steps(stopped) < 15 and time.time() < deadline:
    time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-2000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
  saved = int(stdout.split("SIGINT: saved step ")[1].split()[0])
  assert 15 <= saved < STEPS
  assert max(int(n) for n in os.listdir(stopped / "checkpoints")) == saved
  restart = subprocess.run(_command(stopped, checkpoint_every=7), check=True,
                           env=ENV, capture_output=True, text=True,
                           timeout=600)
  assert f"Resumed from step {saved} " in restart.stdout
  with open(stopped / "metrics.jsonl") as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == list(range(1, STEPS + 1))
  _assert_matches(straight, stopped)

