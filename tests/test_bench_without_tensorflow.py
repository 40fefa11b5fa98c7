"""The speed benches run where TensorFlow and seqio are not installed.

A GPU host's image holds jax, flax, optax, torch and transformers but not
TensorFlow or seqio, and nothing can be installed there beyond a few
carried wheels (gin-config), so the step and decode benches must not
import the input pipeline. Each bench runs here in a subprocess whose
imports of those packages fail as an absent package's would.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parent.parent
_ABSENT = ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text")
# Runs a script with the packages above missing (a finder that refuses
# them before any other is asked).
_RUNNER = f"""
import importlib.abc, os, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in {_ABSENT!r}:
      raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # As `python script.py`.
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _bench(script, *args):
  result = helpers.run_python(
      "-c", _RUNNER, str(ROOT / "bench" / script), *args, timeout=300,
      cwd=ROOT, PYTHONPATH=os.pathsep.join([str(ROOT / "gin_configs"),
                                            str(ROOT)]))
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()
          if line.startswith("{")]


@pytest.mark.integration
def test_train_step_bench_runs_without_tensorflow():
  (result,) = _bench("train_throughput.py", "--gin_file=models/tiny.gin",
                     "--batch=8", "--encoder_length=32",
                     "--decoder_length=32", "--steps=2", "--fused_loss",
                     "--profile_top=3")
  assert result["step_s"] > 0 and result["objective"]["fused_loss"]
  assert 0 < result["loss"] < 20
  # The trace's ops, named as in the compiled HLO, busiest first.
  times = [op["ms"] for op in result["top_ops"]]
  assert len(times) == 3 and times == sorted(times, reverse=True)
  assert all(op["op_name"].startswith("jit(step)") for op in result["top_ops"])


@pytest.mark.integration
def test_decode_bench_runs_without_tensorflow():
  (result,) = _bench("generation.py", "--gin_file=models/tiny.gin",
                     "--batches=1", "--source_lengths=32", "--repeats=2",
                     "--skip_ar")
  assert result["nar"]["median_s"] > 0 and result["batch"] == 1


@pytest.mark.integration
def test_the_runner_hides_tensorflow():
  """The two checks above mean something only if the runner's finder really
  hides the packages."""
  probe = _RUNNER.split("sys.argv")[0] + "import seqio\n"
  result = helpers.run_python("-c", probe, timeout=60)
  assert result.returncode != 0 and "No module named 'seqio'" in result.stderr


@pytest.mark.integration
def test_device_checks_script_runs_every_check_at_toy_sizes(tmp_path):
  """bench/device_checks.sh is what a GPU session runs in its few minutes:
  every check must produce its JSON line, none a failure."""
  result = subprocess.run(
      ["bash", str(ROOT / "bench" / "device_checks.sh"), str(tmp_path),
       "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHON=sys.executable))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(line) for line in
           (tmp_path / "device_checks.jsonl").read_text().splitlines()]
  assert [line["check"] for line in lines] == [
      "environment", "step_before", "step_after", "decode_bf16",
      "decode_fp32"]
  assert not [line for line in lines if "failed" in line]
  before, after = lines[1], lines[2]
  assert before["dtype"] == after["dtype"] == "bfloat16"
  assert after["objective"]["fused_loss"] and not before["objective"][
      "fused_loss"]
  assert len(after["top_ops"]) == 15 and "mfu" in after
  assert lines[3]["speedup"] > 0 and lines[4]["dtype"] == "float32"
