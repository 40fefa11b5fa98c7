"""Max-length decoding against oracle lengths, with and without spare slots.

Fine-tunes the tiny ELMER from scratch (experiments/finetune_sample_tiny.gin,
lengths 32; --gin_file picks another recipe) on one task with one spare-slot setting, then decodes the
validation split two ways: `max_length` with `generate`'s default slots (the
run's decoder_length), cut at the first `</s>`, and `oracle` (reference
lengths). Prints one JSON line: ROUGE-L of both, the gap, the share of
outputs whose token count (and word count) is within ±1 of the reference's,
and the share a length prior gets (one length for all, the best on the
training targets).

  python bench/length_modes.py --task=pairs --spare_slots=decoder_length \
      --work_dir=/tmp/length_modes [--steps=300] [--eval_step=N]

Tasks: `denoise` (sample_sentence_denoise_elmer), `title`
(sample_title_elmer), `pairs` (a sentence of the bundled sample → its first
three words, written as JSONL pairs under --work_dir; articles held out as
sample_wiki_elmer holds them out are the validation split). The title
task holds out 5 articles; `--task=title --folds=4` cross-validates it over
all 96 instead (four runs, each holding out a quarter), and prints each
fold's line and their pooled figures.
"""

import hashlib
import json
import os
import re
import time

from absl import app, flags
import gin
import numpy as np
import tensorflow as tf

import tasks  # Registers the tasks.
from elmer_jax import decoding, generation_eval, gin_utils, trained_model
from elmer_jax.training import loop

_TASK = flags.DEFINE_enum("task", "pairs", ["denoise", "title", "pairs"],
                          "Which task.")
_SPARE = flags.DEFINE_string("spare_slots", "decoder_length",
                             "TrainConfig.spare_slots.")
_LABELS = flags.DEFINE_string("spare_labels", "ignore",
                              "TrainConfig.spare_labels.")
_STEPS = flags.DEFINE_integer("steps", 300, "Fine-tuning steps.")
_WORK = flags.DEFINE_string("work_dir", "/tmp/length_modes", "Runs go here.")
_GIN_FILE = flags.DEFINE_string(
    "gin_file", "experiments/finetune_sample_tiny.gin", "The fine-tuning "
    "recipe (experiments/finetune_sample_small.gin: the 6-layer model).")
_INIT = flags.DEFINE_string("init_checkpoint", None, "Fine-tune from this "
                            "checkpoint's parameters (e.g. a `make demo` "
                            "run directory) instead of from scratch.")
_FOLDS = flags.DEFINE_integer("folds", 0, "--task=title only: cross-validate "
                              "over this many splits of the 96 articles.")
_EVAL_STEP = flags.DEFINE_integer("eval_step", None, "Only decode this "
                                  "checkpoint of the run (no training).")
_BINDINGS = flags.DEFINE_multi_string(
    "gin", [], "Extra gin bindings, after the script's own (e.g. a learning "
    "rate, or evaluation every 50 steps); the run's name gets their hash.")

TASKS = {"denoise": "sample_sentence_denoise_elmer",
         "title": "sample_title_elmer", "pairs": "first_three_words_elmer"}


def write_first_three_words(directory: str) -> dict[str, str]:
  """JSONL pairs: each paragraph's first sentence (8+ words) → its first
  three words; validation from the articles sample_wiki_elmer holds out."""
  held_out = tasks.pretraining.holdout_source(tasks.pretraining.SAMPLE_JSONL)
  tf.io.gfile.makedirs(directory)
  files = {}
  for split in ("train", "validation"):
    path = os.path.join(directory, f"{split}.jsonl")
    files[split] = path
    if os.path.exists(path):  # Written by an earlier call (--eval_step).
      continue
    with open(path, "w") as f:
      for line in held_out.get_dataset(split).as_numpy_iterator():
        for paragraph in json.loads(line)["text"].split("\n"):
          sentence = re.sub(r"^(.*?[.!?])\s.*$", r"\1", paragraph)
          words = sentence.split()
          if len(words) >= 8:
            f.write(json.dumps({"source": sentence,
                                "target": " ".join(words[:3])}) + "\n")
  return files


def length_share(predictions, examples) -> float:
  """Share of outputs whose token count is within ±1 of the reference's
  (reference tokens without `</s>`)."""
  close = [abs(len(p["exit_layers"]) - (ex["target_length"] - 1)) <= 1
           for p, ex in zip(predictions, examples)]
  return float(np.mean(close))


def prior_share(train_examples, examples) -> float:
  """The share a length prior gets within ±1: one length for every output,
  the one that is within ±1 of the most training targets."""
  train = np.array([ex["target_length"] for ex in train_examples])
  best = max(range(1, int(train.max()) + 1),
             key=lambda n: np.mean(np.abs(train - n) <= 1))
  return float(np.mean([abs(ex["target_length"] - best) <= 1
                        for ex in examples]))


def word_share(predictions) -> float:
  """Share of outputs whose word count is within ±1 of the reference's (the
  issue's first measure: 3 ± 1 words)."""
  close = [abs(len(p["prediction"].split()) - len(p["reference"].split())) <= 1
           for p in predictions]
  return float(np.mean(close))


def write_title_folds(directory: str, folds: int) -> list[dict[str, str]]:
  """JSONL pairs as sample_title_elmer makes them (an article's first
  paragraph → its title), in `folds` cross-validation splits: fold k holds
  out the articles whose line index is k modulo `folds`."""
  with open(tasks.pretraining.SAMPLE_JSONL) as f:
    articles = [json.loads(line) for line in f]
  splits = []
  for fold in range(folds):
    files = {}
    for split in ("train", "validation"):
      path = os.path.join(directory, f"title_fold{fold}of{folds}",
                          f"{split}.jsonl")
      files[split] = path
      tf.io.gfile.makedirs(os.path.dirname(path))
      with open(path, "w") as f:
        for index, article in enumerate(articles):
          if (index % folds == fold) == (split == "validation"):
            f.write(json.dumps({"source": article["text"].split("\n")[0],
                                "target": article["title"]}) + "\n")
    splits.append(files)
  return splits


def run(task: str, model_dir: str, bindings: list[str]) -> dict:
  """Fine-tunes (unless --eval_step) and decodes one task's validation split
  both ways; the result's figures as the module docstring says."""
  tf.io.gfile.makedirs(model_dir)
  bindings = [f"MIXTURE_OR_TASK_NAME='{task}'",
              f"loop.TrainConfig.spare_slots='{_SPARE.value}'",
              f"loop.TrainConfig.spare_labels='{_LABELS.value}'",
              f"loop.TrainConfig.steps={_STEPS.value}",
              f"optimizer.OptimizerConfig.total_steps={_STEPS.value}",
              f"loop.TrainConfig.checkpoint_every={_STEPS.value // 3}",
              f"evaluation.EvalConfig.every={_STEPS.value // 3}",
              *([f"INIT_CHECKPOINT='{_INIT.value}'"]
                if _INIT.value else []),
              # Named in the run's config.gin, so that `generate` can decode
              # the run without this script's tasks.
              f"VOCABULARY={tasks.pretraining.SAMPLE_SPM!r}", *bindings,
              *_BINDINGS.value]
  gin_utils.parse([_GIN_FILE.value], bindings)
  model_config = gin_utils.macro("MODEL_CONFIG")
  train_config = gin_utils.macro("TRAIN_CONFIG")
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.config_str())  # As train.py: a run directory generate reads.
  start = time.time()
  if _EVAL_STEP.value is None:
    loop.train(model_config, train_config, model_dir)
  train_s = time.time() - start
  model = trained_model.load(model_dir, _EVAL_STEP.value,
                             use_vocabulary=tasks.use_vocabulary)
  slots = train_config.decoder_length
  examples = generation_eval.read_examples(
      task, "validation", train_config.encoder_length, slots)
  train_examples = generation_eval.read_examples(
      task, "train", train_config.encoder_length, slots)
  result = {"task": task, "recipe": _recipe(),
            "init_checkpoint": _INIT.value, "spare_slots": _SPARE.value,
            "spare_labels": _LABELS.value, "steps": _STEPS.value,
            "gin": _BINDINGS.value, "slots": slots, "examples": len(examples),
            "train_s": round(train_s, 1),
            "checkpoint": os.path.basename(model.checkpoint)}
  for mode in ("max_length", "oracle"):
    config = generation_eval.GenerationEvalConfig(
        decode=decoding.DecodeConfig(length_mode=mode, max_length=slots))
    scores, predictions = generation_eval.evaluate(
        model.config, model.params, model.vocabulary, examples, config,
        train_config.encoder_length)
    result[f"{mode}/rougeL"] = round(scores["rougeL"], 2)
    result[f"{mode}/length_within_1"] = round(
        length_share(predictions, examples), 3)
    result[f"{mode}/words_within_1"] = round(word_share(predictions), 3)
    if mode == "max_length":
      result["max_length/samples"] = [p["prediction"] for p in
                                      predictions[:3]]
  result["gap"] = round(result["oracle/rougeL"] - result["max_length/rougeL"],
                        2)
  # What ±1 means on this task: a length that ignores the input gets this.
  result["prior/length_within_1"] = round(
      prior_share(train_examples, examples), 3)
  return result


def pooled(results: list[dict]) -> dict:
  """The folds' figures over all their validation examples (each fold's
  means weighted by its examples)."""
  total = sum(r["examples"] for r in results)
  keys = [k for k in results[0]
          if k.startswith(("max_length/", "oracle/", "prior/"))
          and not k.endswith("samples")]
  out = {"folds": len(results), "examples": total}
  for key in keys:
    out[key] = round(sum(r[key] * r["examples"] for r in results) / total, 3)
  out["gap"] = round(out["oracle/rougeL"] - out["max_length/rougeL"], 2)
  return out


def _recipe() -> str:
  return os.path.basename(_GIN_FILE.value).removesuffix(".gin")


def main(argv):
  del argv
  name = ".".join([_TASK.value, _SPARE.value, _LABELS.value, str(_STEPS.value),
                   *([] if _recipe() == "finetune_sample_tiny"
                     else [_recipe()]),
                   *(["pretrained"] if _INIT.value else []),
                   *([hashlib.sha1("\n".join(_BINDINGS.value).encode())
                      .hexdigest()[:8]] if _BINDINGS.value else [])])
  model_dir = os.path.join(_WORK.value, name)
  if _FOLDS.value:
    if _TASK.value != "title":
      raise app.UsageError("--folds: only --task=title (the pairs and "
                           "denoise tasks hold out hundreds of examples).")
    results = []
    for fold, files in enumerate(write_title_folds(_WORK.value,
                                                   _FOLDS.value)):
      task = f"title_fold{fold}of{_FOLDS.value}_elmer"
      tasks.finetuning.register_pairs_task(
          task, [files["train"]], [files["validation"]], file_format="jsonl")
      results.append(run(task, f"{model_dir}.fold{fold}of{_FOLDS.value}", []))
      print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"task": "sample_title_elmer, cross-validated",
                      "recipe": _recipe(), "init_checkpoint": _INIT.value,
                      "spare_slots": _SPARE.value, "steps": _STEPS.value,
                      "gin": _BINDINGS.value, **pooled(results)}))
    return
  task, bindings = TASKS[_TASK.value], []
  if _TASK.value == "title":  # Fewer held-out articles than one batch.
    bindings = ["evaluation.EvalConfig.every=0",
                "loop.TrainConfig.keep_best_checkpoints=0"]
  if _TASK.value == "pairs":
    files = write_first_three_words(_WORK.value)
    tasks.finetuning.register_pairs_task(
        task, [files["train"]], [files["validation"]], file_format="jsonl")
  print(json.dumps(run(task, model_dir, bindings)))


if __name__ == "__main__":
  app.run(main)
