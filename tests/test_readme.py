"""The README's snippets run as written, from a directory that is not the
repository (with folders named like gin_configs/ ones in it)."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import run_python, sample_run, subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.integration


def _readme() -> str:
  with open(os.path.join(ROOT, "README.md")) as f:
    return f.read()


def _python_blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", _readme(), re.S)


def _elsewhere(tmp_path):
  for folder in ("data", "runs", "models", "experiments"):
    (tmp_path / folder).mkdir()
  return subprocess_env(1, PYTHONPATH=ROOT)


def test_readme_has_the_snippets_this_test_runs():
  assert len(_python_blocks()) >= 2


@pytest.mark.parametrize("block", _python_blocks())
def test_python_snippet_runs_as_written(tmp_path, block):
  env = _elsewhere(tmp_path)
  exports = re.search(r'OUT = "(.*?)"', block)
  if exports:  # The export snippet reads an export of a run.
    run = tmp_path / "runs" / "run"
    sample_run(str(run))
    result = run_python("-m", "elmer_jax.export", f"--model_dir={run}",
                        f"--output_dir={tmp_path / exports.group(1)}",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
  result = run_python("-c", block, timeout=420, cwd=tmp_path, **env)
  assert result.returncode == 0, block + result.stderr[-3000:]
  if "objectives.summarize" in block:
    assert "'loss'" in result.stdout and "'accuracy'" in result.stdout
  if exports:  # One decoded string per input text.
    assert len(ast.literal_eval(result.stdout.splitlines()[-1])) == 2


def test_readme_training_command_runs_from_another_directory(tmp_path):
  """The first command of "Training", shortened to a few steps."""
  block = re.search(r"### Training\n\n```\n(.*?)```", _readme(), re.S).group(1)
  argv = shlex.split(block.replace("\\\n", " "))
  assert argv[:3] == ["python", "-m", "elmer_jax.train"]
  argv = [sys.executable, *argv[1:]]
  argv = [a.replace("/tmp/run", str(tmp_path / "run")) for a in argv]
  argv = [re.sub(r"steps=\d+", "steps=4", a) for a in argv]
  argv += ["--gin.loop.TrainConfig.log_every=2",
           "--gin.optimizer.OptimizerConfig.warmup_steps=1"]  # < 4 steps.
  result = subprocess.run(argv, cwd=tmp_path, env=_elsewhere(tmp_path),
                          capture_output=True, text=True, timeout=420)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4]
  assert "wiki_sample.jsonl" in result.stdout


def test_readme_own_corpus_command_trains_on_a_txt_file(tmp_path):
  """The "Your own corpus" command on a fresh .txt corpus, with the run
  shortened (steps, warm-up, batch) to fit a CPU; its lengths are the
  README's, so they must fit the model's position table."""
  block = re.search(r"Your own corpus:.*?```\n(.*?)```", _readme(),
                    re.S).group(1)
  argv = shlex.split(block.replace("\\\n", " "))
  argv = [sys.executable, *argv[1:]]
  argv = [a.replace("/tmp/own", str(tmp_path / "own")) for a in argv]
  argv = [re.sub(r"steps=\d+", "steps=4", a) for a in argv]
  argv += ["--gin.optimizer.OptimizerConfig.warmup_steps=1",
           "--gin.loop.TrainConfig.log_every=2",
           "--gin.loop.TrainConfig.batch_size=8"]
  sentences = [f"Document number {i} talks about the city and its port."
               for i in range(40)]
  (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n")
  result = subprocess.run(argv, cwd=tmp_path, env=_elsewhere(tmp_path),
                          capture_output=True, text=True, timeout=420)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "40 lines read from" in result.stdout
  with open(tmp_path / "own" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4]
