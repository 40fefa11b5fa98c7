"""Evaluate a trained ELMER's generations on a task split.

  python -m elmer_jax.evaluate --model_dir=RUN --gin_file=runs/eval.gin \
      [--gin.decoding.DecodeConfig.exit_threshold=0.5] [--step=N]

Decodes the split (`GENERATION_EVAL`, see gin_configs/runs/eval.gin; the
task and input length default to the run's), scores ROUGE-1/2/L, BLEU-4,
distinct-1/2, the average exit layer and the decoder-layer passes saved, and
writes them as JSON (`RUN/eval/<task>.<split>.step<N>.<mode><slots>.exit<t>
.json`, with the predictions beside it; a name already taken gets `.2`, `.3`,
so no result is overwritten) and TensorBoard/JSONL scalars (`RUN/eval/`).
Decoder slots default to the run's `decoder_length`.
"""

import dataclasses
import json
import os
import sys

from absl import app, flags
import tensorflow as tf

from elmer_jax import generation_eval, gin_utils, trained_model
from elmer_jax.training.metrics_writer import MetricsWriter

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best "
                             "by eval loss, else latest).")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Extra gin files, "
                                       "e.g. runs/eval.gin.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [],
                                          "Gin bindings (also --gin.X=Y).")


def _eval_config(train_config, slots: int
                 ) -> generation_eval.GenerationEvalConfig:
  try:
    config = gin_utils.macro("GENERATION_EVAL")
  except ValueError:
    config = generation_eval.GenerationEvalConfig()
  if train_config is None and not (config.mixture_or_task
                                   and config.encoder_length):
    raise ValueError(
        "The run has no training config (an import_hf run directory): bind "
        "generation_eval.GenerationEvalConfig.mixture_or_task and "
        ".encoder_length (e.g. --gin.generation_eval.GenerationEvalConfig."
        "mixture_or_task=\"'xsum_elmer'\").")
  decode = config.decode
  if decode.max_length is None:
    decode = dataclasses.replace(decode, max_length=slots)
  return dataclasses.replace(
      config, decode=decode,
      mixture_or_task=config.mixture_or_task or train_config.mixture_or_task,
      encoder_length=config.encoder_length or train_config.encoder_length)


def result_name(config: generation_eval.GenerationEvalConfig,
                step: int) -> str:
  """`<task>.<split>.step<N>.<length mode><slots>.exit<threshold>`, plus
  `.collapse` and `.first<K>` (max_examples) where set."""
  decode = config.decode
  name = (f"{config.mixture_or_task}.{config.split}.step{step}."
          f"{decode.length_mode}{decode.max_length}."
          f"exit{decode.exit_threshold:g}")
  if decode.collapse_repeats:
    name += ".collapse"
  if config.max_examples:
    name += f".first{config.max_examples}"
  return name


def unused_name(out_dir: str, name: str) -> str:
  """`name`, or `name.2`, `name.3`, ...: an earlier result is never
  overwritten."""
  taken = lambda n: tf.io.gfile.exists(os.path.join(out_dir, n + ".json"))
  candidate, count = name, 1
  while taken(candidate):
    count += 1
    candidate = f"{name}.{count}"
  return candidate


def main(argv):
  del argv
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required: the training run.")
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value)
  config = _eval_config(model.train_config, model.slots)
  examples = generation_eval.read_examples(
      config.mixture_or_task, config.split, config.encoder_length,
      config.decode.max_length, config.max_examples)
  scores, predictions = generation_eval.evaluate(
      model.config, model.params, model.vocabulary, examples, config,
      config.encoder_length)
  step = int(os.path.basename(model.checkpoint))
  out_dir = os.path.join(_MODEL_DIR.value, "eval")
  tf.io.gfile.makedirs(out_dir)
  name = unused_name(out_dir, result_name(config, step))
  result = {"checkpoint": model.checkpoint, "step": step,
            "task": config.mixture_or_task, "split": config.split,
            "decode": dataclasses.asdict(config.decode), "metrics": scores,
            "file": os.path.join(out_dir, name + ".json")}
  with tf.io.gfile.GFile(os.path.join(out_dir, name + ".json"), "w") as f:
    json.dump(result, f, indent=1)
  with tf.io.gfile.GFile(os.path.join(out_dir, name + ".predictions.jsonl"),
                         "w") as f:
    f.write("".join(json.dumps(p) + "\n" for p in predictions))
  writer = MetricsWriter(out_dir)
  writer.write(step, {f"generation/{k}": v for k, v in scores.items()})
  writer.close()
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))
