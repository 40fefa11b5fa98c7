"""Where a generation evaluation's result goes, and writing it there.

`RUN/eval/<task>.<split>.step<N>.<mode><slots>.exit<t>.json` (the scores),
with `.predictions.jsonl` beside it and the scores as TensorBoard/JSONL
scalars in `RUN/eval/`; a name already taken gets `.2`, `.3`, so no result
is overwritten.
"""

import dataclasses
import json
import os

import tensorflow as tf

from elmer_jax import generation_eval
from elmer_jax.training.metrics_writer import MetricsWriter


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


def write_result(run_dir: str, checkpoint: str,
                 config: generation_eval.GenerationEvalConfig,
                 scores: dict, predictions: list[dict]) -> dict:
  """Writes the scores, predictions and scalars of `checkpoint` (a step
  directory of the run) under `run_dir/eval/`; returns the result written."""
  step = int(os.path.basename(checkpoint))
  out_dir = os.path.join(run_dir, "eval")
  tf.io.gfile.makedirs(out_dir)
  name = unused_name(out_dir, result_name(config, step))
  result = {"checkpoint": checkpoint, "step": step,
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
  return result
