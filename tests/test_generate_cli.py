"""Fine-tune from a pretrained run, then generate and evaluate from the
command line: the whole user path on a tiny model."""

import dataclasses
import json
import os
import subprocess
import sys

import flax
import gin
import jax
import orbax.checkpoint as ocp
import pytest

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax import gin_utils, trained_model
from elmer_jax.model.params import init_params
from elmer_jax.training import evaluation, loop
from tests.helpers import third_party_noise

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
  assert f"checkpoints/{_best_step(finetuned)}, 12 slots)" in result.stdout
  noise = third_party_noise(result.stderr)
  assert not noise, noise[:5]



@pytest.mark.integration
def test_blank_lines_keep_outputs_aligned_and_default_slots_are_the_runs(
    finetuned, tmp_path):
  """Blank and whitespace-only lines give empty output lines in place (and
  are counted in the log); the other lines are decoded exactly as when the
  file holds them alone; the default slots are the run's decoder_length."""
  texts = ["Paris is the capital of France.", "The river flows to the sea."]
  alone, mixed = tmp_path / "alone.txt", tmp_path / "mixed.txt"
  alone.write_text("\n".join(texts) + "\n")
  mixed.write_text(f"\n{texts[0]}\n   \n\n{texts[1]}\n")
  outputs = {}
  for path in (alone, mixed):
    out = path.with_suffix(".jsonl")
    result = _run("generate", f"--model_dir={finetuned}",
                  f"--input_file={path}", f"--output_file={out}",
                  "--output_format=jsonl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "32 slots" in result.stdout  # TrainConfig.decoder_length above.
    outputs[path.name] = [json.loads(l) for l in out.read_text().splitlines()]
  assert "3 of 5 lines" in result.stderr and "blank" in result.stderr
  rows = outputs["mixed.txt"]
  assert len(rows) == 5
  for i in (0, 2, 3):
    assert rows[i] == {"text": "", "tokens": [], "exit_layers": []}
  assert [rows[1], rows[4]] == outputs["alone.txt"]
  assert all(len(r["tokens"]) <= 32 for r in rows)


@pytest.mark.integration
def test_empty_input_file_gives_an_empty_output_file(finetuned, tmp_path):
  (tmp_path / "in.txt").write_text("")
  out = tmp_path / "out.txt"
  out.write_text("stale\n")
  result = _run("generate", f"--model_dir={finetuned}",
                f"--input_file={tmp_path / 'in.txt'}", f"--output_file={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert out.read_text() == ""
  assert "Wrote 0 outputs" in result.stdout


@pytest.mark.integration
def test_bad_input_lines_and_slot_counts_are_named(finetuned, tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"Fine line.\nAlso fine.\n\xff\xfe broken\n")
  common = [f"--model_dir={finetuned}", f"--output_file={tmp_path / 'o'}"]
  result = _run("generate", *common, f"--input_file={bad}")
  assert result.returncode != 0
  assert "line 3 is not UTF-8" in result.stderr
  good = tmp_path / "good.txt"
  good.write_text("A line.\n")
  for value, expected in (("1", "--max_length=1: decoder slots must be >= 2"),
                          ("257", "--max_length=257: decoder slots must lie in "
                                 "[2, 256]")):
    result = _run("generate", *common, f"--input_file={good}",
                  f"--max_length={value}")
    assert result.returncode != 0 and expected in result.stderr, (
        result.stderr[-2000:])
  assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_a_run_from_before_spare_slots_still_generates_with_a_warning(
    finetuned, tmp_path):
  """An old run's config.gin never names spare_slots: it decodes as before
  and the log says how to retrain."""
  old = tmp_path / "old_run"
  old.mkdir()
  (old / "checkpoints").symlink_to(finetuned / "checkpoints")
  (old / "config.gin").write_text("\n".join(
      line for line in (finetuned / "config.gin").read_text().splitlines()
      if "spare_" not in line))
  (tmp_path / "in.txt").write_text("Paris is the capital of France.\n")
  result = _run("generate", f"--model_dir={old}",
                f"--input_file={tmp_path / 'in.txt'}",
                f"--output_file={tmp_path / 'out.txt'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "trained without spare decoder slots" in result.stderr
  assert "predates TrainConfig.spare_slots" in result.stderr
  assert "spare_slots=\"'decoder_length'\"" in result.stderr
  assert len((tmp_path / "out.txt").read_text().splitlines()) == 1
  fresh = _run("generate", f"--model_dir={finetuned}",
               f"--input_file={tmp_path / 'in.txt'}",
               f"--output_file={tmp_path / 'fresh.txt'}")
  assert "spare decoder slots" not in fresh.stderr
  assert ((tmp_path / "fresh.txt").read_text()
          == (tmp_path / "out.txt").read_text())


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
      f"sample_sentence_denoise_elmer.validation.step{report['step']}."
      "max_length16.exit0.first6.json")
  assert report["file"] == str(saved)
  assert json.loads(saved.read_text())["metrics"] == report["metrics"]
  predictions = saved.with_name(saved.name.replace(".json",
                                                   ".predictions.jsonl"))
  assert len(predictions.read_text().splitlines()) == 6


@pytest.mark.slow  # Over a minute: evaluate twice in subprocesses.
def test_evaluate_never_overwrites_an_earlier_result(finetuned):
  """Other settings get their own file (default slots: the run's 32);
  the same settings again get `.2`, the first file stays as it was."""
  args = [f"--model_dir={finetuned}", "--gin_file=runs/eval.gin",
          "--gin.generation_eval.GenerationEvalConfig.max_examples=4",
          "--gin.generation_eval.GenerationEvalConfig.batch_size=4"]
  files = []
  for extra in ([], ["--gin.decoding.DecodeConfig.length_mode='oracle'"], []):
    result = _run("evaluate", *args, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    files.append(json.loads(result.stdout.strip().splitlines()[-1])["file"])
  base = (f"sample_sentence_denoise_elmer.validation.step{_best_step(finetuned)}"
          ".{}32.exit0.first4")
  assert [f.rsplit("/", 1)[1] for f in files] == [
      base.format("max_length") + ".json", base.format("oracle") + ".json",
      base.format("max_length") + ".2.json"]
  first = json.loads(open(files[0]).read())
  assert first["decode"]["max_length"] == 32
  assert first["metrics"] == json.loads(open(files[2]).read())["metrics"]


def test_a_run_without_checkpoints_is_named(finetuned, tmp_path):
  (tmp_path / "config.gin").write_text((finetuned / "config.gin").read_text())
  result = _run("generate", f"--model_dir={tmp_path}",
                f"--input_file={tmp_path}/x", f"--output_file={tmp_path}/y")
  assert result.returncode != 0
  assert "has no checkpoints/ directory" in result.stderr


@pytest.mark.integration
def test_exported_model_generates_the_cli_texts(finetuned, tmp_path):
  """The transformers call a user writes, `generate(**tokenizer(...))` then
  `batch_decode(skip_special_tokens=True)`, gives the texts of
  `python -m elmer_jax.generate` on the same inputs (both with the run's
  default slots)."""
  import torch
  import transformers
  texts = ["Paris is the capital of France.", "The river flows to the sea.",
           "Anarchism is a political philosophy."]
  (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
  result = _run("generate", f"--model_dir={finetuned}",
                f"--input_file={tmp_path / 'in.txt'}",
                f"--output_file={tmp_path / 'out.txt'}")
  assert result.returncode == 0, result.stderr[-3000:]
  exported = _run("export", f"--model_dir={finetuned}",
                  f"--output_dir={tmp_path / 'hf'}")
  assert exported.returncode == 0, exported.stderr[-3000:]
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
      str(tmp_path / "hf"), trust_remote_code=True).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  ids = model.generate(**tokenizer(texts, return_tensors="pt", padding=True))
  assert ids.dtype == torch.long and ids.shape == (3, 32)
  ours = tokenizer.batch_decode(ids, skip_special_tokens=True)
  cli_texts = (tmp_path / "out.txt").read_text().splitlines()
  assert ours == cli_texts
  # The README's check of an export: the same texts, the exported slots.
  printed = subprocess.run(
      [sys.executable, "-m", "elmer_jax.export.hf_generate",
       f"--hf_dir={tmp_path / 'hf'}", *(f"--text={t}" for t in texts)],
      capture_output=True, text=True, timeout=600,
      env={**os.environ, "HF_HUB_OFFLINE": "1"})
  assert printed.returncode == 0, printed.stderr[-3000:]
  outputs = [line.split("  -> ", 1)[1] for line in printed.stdout.splitlines()
             if line.startswith("  -> ")]
  assert outputs == cli_texts


@pytest.mark.integration
def test_generate_decodes_in_bf16_with_the_readme_bindings(finetuned,
                                                           tmp_path):
  """The README's bf16 bindings restore the parameters in bf16 and decode
  with them; the outputs stay those of fp32 decoding but for near ties."""
  bf16 = ["--gin.config.ElmerConfig.dtype='bfloat16'",
          "--gin.config.ElmerConfig.param_dtype='bfloat16'"]
  texts = tmp_path / "in.txt"
  texts.write_text("Paris is the capital of France.\n"
                   "The river flows to the sea.\n"
                   "Anarchism is a political philosophy.\n")
  rows = {}
  for name, extra in (("fp32", []), ("bf16", bf16)):
    out = tmp_path / f"{name}.jsonl"
    result = _run("generate", f"--model_dir={finetuned}",
                  f"--input_file={texts}", f"--output_file={out}",
                  "--output_format=jsonl", "--max_length=16", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    rows[name] = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(rows["bf16"]) == 3
  same = [a == b for fp32, bf16_ in zip(rows["fp32"], rows["bf16"])
          for a, b in zip(fp32["tokens"], bf16_["tokens"])]
  assert same and sum(same) >= 0.8 * len(same), same
  trained_model.parse_run_config(str(finetuned), [], [b.removeprefix(
      "--gin.").replace("=", " = ", 1) for b in bf16])
  model = trained_model.load(str(finetuned),
                             use_vocabulary=tasks.use_vocabulary)
  assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {
      jax.numpy.dtype("bfloat16")}
