"""Input that yields nothing fails fast and says why; what was dropped or
repaired is counted; a misspelled macro is named."""

import json
import math
import os
import subprocess
import sys

import gin
import pytest
import seqio

from elmer_jax import gin_utils
from elmer_jax.data import input_checks
from tasks import pretraining
from tests.helpers import subprocess_env, third_party_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_SHARD = [seqio.ShardInfo(index=0, num_shards=1)]
LENGTHS = {"inputs": 32, "targets": 32}


def _check(path, **kwargs):
  name = pretraining.register_text_files_task("input_check_test", [str(path)],
                                              **kwargs)
  lines = []
  reports = input_checks.check_tasks(name, LENGTHS, "train", ONE_SHARD,
                                     log=lines.append)
  return reports, lines


def test_format_follows_the_extension_and_counts_are_reported(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_bytes(b"First document here.\n\n   \nCaf\xe9 latin-1 text.\n"
                     b'{"text": "json-looking but a text file"}\n')
  (report,), lines = _check(corpus)
  assert (report.read, report.kept, report.repaired) == (5, 3, 1)
  assert report.complete and "corpus.txt" in report.where
  assert lines == [report.line()]
  assert ("5 lines read from" in lines[0] and "3 examples after parsing and "
          "cleaning, 2 lines dropped, 1 with invalid UTF-8 repaired"
          in lines[0])


@pytest.mark.parametrize("name,content,kwargs,cause", [
    ("corpus.txt", "plain text, one document per line\n" * 5,
     {"file_format": "jsonl"}, r"are not JSON .* set file_format='text'"),
    ("docs.jsonl", "".join(json.dumps({"body": f"doc {i}", "id": i}) + "\n"
                           for i in range(5)), {},
     r"JSON objects with the fields \['body', 'id'\], none of which the task "
     r"reads.*TEXT_FIELD"),
    ("empty.txt", "", {}, r"the files hold no lines \(.*empty.txt\)"),
    ("blank.txt", "\n  \n\t\n", {}, r"every line read is blank"),
])
def test_a_task_that_yields_nothing_names_task_files_counts_and_cause(
    tmp_path, name, content, kwargs, cause):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(input_checks.NoInputError,
                     match=rf"'input_check_test' \(train split\) yields no "
                     rf"example.*{name}.*Likely cause: .*{cause}"):
    _check(path, **kwargs)


def test_explicit_format_wins_and_mixed_extensions_need_one():
  assert pretraining.file_format_of(["a/b.jsonl", "c.json.gz"]) == "jsonl"
  assert pretraining.file_format_of(["corpus.txt", "notes"]) == "text"
  with pytest.raises(ValueError, match="mix JSONL and text"):
    pretraining.file_format_of(["a.jsonl", "b.txt"])


def test_a_bound_macro_nothing_reads_is_named_with_the_nearest():
  bindings = ["TRAIN_FILS=['corpus.txt']"]
  gin_utils.parse(["models/tiny_sample.gin", "runs/pretrain.gin",
                   "data/local_files.gin"], bindings)
  with pytest.raises(ValueError, match=r"macro TRAIN_FILS .* is read by no "
                     r"config.*did you mean TRAIN_FILES\?"):
    gin_utils.check_bound_macros(bindings, ("MODEL_CONFIG", "TRAIN_CONFIG"))
  gin_utils.check_bound_macros(["TRAIN_FILES=['x']", "MODEL_CONFIG=None",
                                "loop.TrainConfig.steps=3"],
                               ("MODEL_CONFIG", "TRAIN_CONFIG"))
  gin.clear_config()


def _train(tmp_path, *flags, timeout=240):
  command = [sys.executable, "-m", "elmer_jax.train",
             "--gin_file=models/tiny_sample.gin", "--gin_file=runs/pretrain.gin",
             "--gin_file=data/local_files.gin", f"--model_dir={tmp_path / 'run'}",
             "--gin.loop.TrainConfig.encoder_length=32",
             "--gin.loop.TrainConfig.decoder_length=32",
             "--gin.loop.TrainConfig.batch_size=8",
             "--gin.optimizer.OptimizerConfig.warmup_steps=2",
             "--gin.evaluation.EvalConfig.every=0", *flags]
  env = subprocess_env(1, PYTHONPATH=ROOT)
  return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.integration
@pytest.mark.parametrize("name,content,flag,expected", [
    ("docs.jsonl", json.dumps({"body": "a document"}) + "\n", None,
     "JSON objects with the fields ['body']"),
    ("empty.txt", "", None, "the files hold no lines"),
    ("corpus.txt", "some text\n", "--gin.TRAIN_FILS=['corpus.txt']",
     "did you mean TRAIN_FILES"),
])
def test_bad_input_fails_within_seconds_naming_it(tmp_path, name, content,
                                                  flag, expected):
  (tmp_path / name).write_text(content)
  result = _train(tmp_path, f"--gin.TRAIN_FILES=['{name}']",
                  *([flag] if flag else []), timeout=180)
  assert result.returncode != 0
  assert expected in result.stderr, result.stderr[-3000:]
  assert name in result.stderr or "TRAIN_FILS" in result.stderr
  assert "compiling the train step" not in result.stdout


@pytest.mark.integration
def test_a_txt_corpus_with_the_defaults_trains_from_any_directory(tmp_path):
  """Folders named like gin_configs/ ones in the working directory change
  nothing; the schedule ends at the overridden last step; the console is
  ours, timestamped, without third-party INFO lines."""
  for folder in ("data", "runs", "models", "experiments"):
    (tmp_path / folder).mkdir()
  with open(pretraining.SAMPLE_JSONL) as f:
    texts = [json.loads(line)["text"].replace("\n", " ") for line in f][:30]
  (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
  result = _train(tmp_path, "--gin.TRAIN_FILES=['corpus.txt']",
                  "--gin.loop.TrainConfig.steps=6",
                  "--gin.loop.TrainConfig.log_every=3", timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [3, 6]
  # Step 6 updates with the rate at count 5 of a cosine from the peak (3e-4,
  # after 2 warm-up steps) to 0.1 of it at count 6 = TrainConfig.steps.
  cosine = 0.5 * (1 + math.cos(math.pi * (5 - 2) / (6 - 2)))
  assert rows[-1]["learning_rate"] == pytest.approx(
      3e-5 + 2.7e-4 * cosine, rel=1e-4)
  out = result.stdout.splitlines()
  assert any("input local_files_elmer (train): 30 lines read from" in line
             and "corpus.txt" in line for line in out), result.stdout
  assert any("compiled the train step in" in line for line in out)
  assert any("step 6/6 loss" in line and " accuracy " in line and " lr " in line
             and " eta 0s" in line for line in out)
  assert all(line[:2].isdigit() and line[2] == ":" for line in out)
  # On CPU, started without huge pages, the run says how to get them.
  tunable = "glibc.malloc.hugetlb=1"
  hinted = any(f"GLIBC_TUNABLES={tunable}" in line for line in out)
  assert hinted == (tunable not in os.environ.get("GLIBC_TUNABLES", ""))
  noise = third_party_noise(result.stderr)
  assert not noise, noise[:5]
