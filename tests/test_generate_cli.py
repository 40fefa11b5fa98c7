"""Fine-tune from a pretrained run, then generate and evaluate from the
command line: the whole user path on a tiny model."""

import dataclasses
import json
import subprocess
import sys

import flax
import gin
import jax
import orbax.checkpoint as ocp
import pytest

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax import gin_utils
from elmer_jax.model.params import init_params
from elmer_jax.training import evaluation, loop

pytestmark = pytest.mark.integration


def _configs(experiment, **changes):
  gin_utils.parse([f"experiments/{experiment}.gin"])
  model, train = gin_utils.macro("MODEL_CONFIG"), gin_utils.macro(
      "TRAIN_CONFIG")
  fields = dict(encoder_length=32, decoder_length=32, batch_size=8, steps=2,
                log_every=1, checkpoint_every=1,
                eval=evaluation.EvalConfig(every=1, batches=1))
  fields.update(changes)
  return model, dataclasses.replace(train, **fields)


def _run(module, *args, cwd=None):
  return subprocess.run([sys.executable, "-m", f"elmer_jax.{module}", *args],
                        capture_output=True, text=True, cwd=cwd,
                        timeout=600)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  """A soft-exit model fine-tuned for two steps from an LPLM run."""
  root = tmp_path_factory.mktemp("runs")
  pretrained = init_params(_configs("demo_sample_tiny")[0], jax.random.key(1))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(root / "pretrain", {"params": pretrained})
  model, train = _configs("finetune_sample_tiny",
                          init_checkpoint=str(root / "pretrain"))
  assert model.soft_exit and train.fresh_params == ("concat_head",)
  run = root / "finetune"
  run.mkdir()
  (run / "config.gin").write_text(gin.config_str())
  loop.train(model, train, str(run))
  return run


def _best_step(run):
  with open(run / "metrics.jsonl") as f:
    losses = {m["step"]: m["eval/loss"] for m in map(json.loads, f)
              if "eval/loss" in m}
  return min(losses, key=losses.get)


def test_fine_tuning_starts_from_the_pretrained_run(finetuned):
  """`concat_head`, which the pretrained model lacks, starts fresh."""
  path = finetuned / "checkpoints" / "2" / "default"
  with ocp.StandardCheckpointer() as checkpointer:
    params = flax.traverse_util.flatten_dict(
        checkpointer.restore(path)["params"], sep="/")
  assert params["concat_head"].shape == (128, 64)


def test_generate_writes_one_output_per_line_with_exit_layers(finetuned,
                                                              tmp_path):
  inputs = tmp_path / "in.txt"
  inputs.write_text("Paris is the capital of France.\n"
                    "Anarchism is a political philosophy.\n"
                    "The river flows to the sea.\n")
  out = tmp_path / "out.jsonl"
  result = _run("generate", f"--model_dir={finetuned.name}",
                f"--input_file={inputs}", f"--output_file={out}",
                "--output_format=jsonl", "--max_length=12",
                "--max_input_length=32", "--exit_threshold=1.0",
                "--batch_size=2", cwd=finetuned.parent)  # A relative run dir.
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(rows) == 3
  for row in rows:
    assert 0 <= len(row["tokens"]) <= 12
    assert len(row["exit_layers"]) == len(row["tokens"])
    assert all(0 <= e <= 2 for e in row["exit_layers"])
  assert f"checkpoints/{_best_step(finetuned)})" in result.stdout

  inputs.write_text("A line.\n\nAnother line.\n")
  empty = _run("generate", f"--model_dir={finetuned}",
               f"--input_file={inputs}", f"--output_file={out}")
  assert empty.returncode != 0 and "texts[1] is empty" in empty.stderr


def test_evaluate_writes_scores(finetuned):
  result = _run("evaluate", f"--model_dir={finetuned}",
                "--gin_file=runs/eval.gin",
                "--gin.generation_eval.GenerationEvalConfig.max_examples=6",
                "--gin.generation_eval.GenerationEvalConfig.batch_size=4",
                "--gin.decoding.DecodeConfig.max_length=16")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["task"] == "sample_sentence_denoise_elmer"
  assert report["metrics"]["examples"] == 6
  for key in ("rouge1", "rouge2", "rougeL", "bleu", "distinct1",
              "distinct2", "average_exit_layer", "decoder_layers_saved"):
    assert key in report["metrics"], key
  saved = finetuned / "eval" / (
      f"sample_sentence_denoise_elmer.validation.step{report['step']}.json")
  assert json.loads(saved.read_text())["metrics"] == report["metrics"]
  predictions = saved.with_name(saved.name.replace(".json",
                                                   ".predictions.jsonl"))
  assert len(predictions.read_text().splitlines()) == 6


def test_a_run_without_checkpoints_is_named(finetuned, tmp_path):
  (tmp_path / "config.gin").write_text((finetuned / "config.gin").read_text())
  result = _run("generate", f"--model_dir={tmp_path}",
                f"--input_file={tmp_path}/x", f"--output_file={tmp_path}/y")
  assert result.returncode != 0
  assert "has no checkpoints/ directory" in result.stderr
