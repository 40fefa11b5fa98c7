"""SIGKILL mid-run, restart: the run ends exactly as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_train_loop import _params

pytestmark = pytest.mark.slow

STEPS = 40


def _command(model_dir):
  return [sys.executable, "-m", "elmer_jax.train",
          "--gin_file=experiments/demo_sample_tiny.gin",
          f"--model_dir={model_dir}",
          f"--gin.loop.TrainConfig.steps={STEPS}",
          "--gin.loop.TrainConfig.log_every=1",
          "--gin.loop.TrainConfig.checkpoint_every=10",
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


def test_sigkill_then_restart_matches_the_straight_run(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  subprocess.run(_command(straight), check=True, env=env, capture_output=True)

  process = subprocess.Popen(_command(killed), env=env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while _logged_steps(killed) < 25 and time.time() < deadline:
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert 25 <= _logged_steps(killed) < STEPS
  subprocess.run(_command(killed), check=True, env=env, capture_output=True)

  expected, got = _losses(straight), _losses(killed)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    assert got[step] == expected[step], step
  a, b = _params(straight, STEPS), _params(killed, STEPS)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
