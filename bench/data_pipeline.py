"""Examples/s and tokens/s per CPU core of the pretraining input pipeline.

Runs a task's whole seqio pipeline (read, clean, tokenize, split, BART noise,
EOS, ElmerFeatureConverter) on one core (TF limited to one thread), and the
same pipeline without noising, so the JSON also shows where the time goes.

  python bench/data_pipeline.py --task=sample_wiki_elmer --length=512
"""

import json
import time

from absl import app, flags
import seqio
import tensorflow as tf

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax.data import pipeline

_TASK = flags.DEFINE_string("task", "sample_wiki_elmer", "seqio task.")
_LENGTH = flags.DEFINE_integer("length", 512, "Encoder and decoder tokens.")
_EXAMPLES = flags.DEFINE_integer("examples", 3000, "Examples to time.")
_THREADS = flags.DEFINE_integer("threads", 1, "TF threads (cores) to use.")


@seqio.map_over_dataset
def _copy_targets(features):
  return {**features, "inputs": features["targets"]}


def _time(dataset: tf.data.Dataset, count: int) -> tuple[float, int]:
  options = tf.data.Options()
  options.threading.private_threadpool_size = _THREADS.value
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(dataset.with_options(options).repeat())
  for _ in range(50):  # Warm up: graph building, file opening.
    next(iterator)
  tokens, start = 0, time.perf_counter()
  for _ in range(count):
    example = next(iterator)
    tokens += int(tf.reduce_sum(tf.cast(example["targets"] != 0, tf.int32)))
  return time.perf_counter() - start, tokens


def main(argv):
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  task = seqio.get_mixture_or_task(_TASK.value)
  lengths = {"inputs": _LENGTH.value, "targets": _LENGTH.value}
  results = {"bench": "data_pipeline", "task": _TASK.value,
             "length": _LENGTH.value, "threads": _THREADS.value}

  noiseless = f"{_TASK.value}_bench_no_noise"
  seqio.TaskRegistry.remove(noiseless)
  seqio.TaskRegistry.add(
      noiseless, source=task.source,
      preprocessors=[_copy_targets if getattr(p, "__name__", "") ==
                     "bart_denoise" else p for p in task.preprocessors],
      output_features=task.output_features)
  for name, label in ((noiseless, "without_noise"), (_TASK.value, "full")):
    dataset = seqio.get_mixture_or_task(name).get_dataset(
        lengths, split="train", shuffle=False, use_cached=False, seed=0)
    dataset = pipeline.converter_for(_TASK.value)(dataset, lengths).map(lambda x: {"targets": x["decoder_target_tokens"]
                                         * x["decoder_loss_weights"]})
    seconds, tokens = _time(dataset, _EXAMPLES.value)
    per_core = 1.0 / _THREADS.value
    results[label] = {
        "examples_per_s_per_core": round(_EXAMPLES.value / seconds * per_core,
                                         1),
        "target_tokens_per_s_per_core": round(tokens / seconds * per_core, 1),
        "mean_target_tokens": round(tokens / _EXAMPLES.value, 1),
    }
  full, bare = results["full"], results["without_noise"]
  results["noise_share_of_time"] = round(
      1 - full["examples_per_s_per_core"] / bare["examples_per_s_per_core"], 3)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
