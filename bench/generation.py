"""ELMER's NAR decoding against autoregressive greedy decoding; prints JSON.

Speed (random weights: speed does not depend on them): the latency of one
jit-compiled NAR decode of `target_tokens` slots (encoder included) against
`transformers` greedy `generate` of a same-sized BART producing exactly
`target_tokens` tokens with a KV cache (encoder included), on the same CPU
with the same thread count, at each batch size; `speedup` = AR / NAR.

Quality (with `--model_dir`, a fine-tuned run): for each entropy threshold,
the average exit layer, the decoder-layer passes saved, the decode time of
the validation examples and ROUGE/BLEU; drawn as a PNG (`--plot`).

  python bench/generation.py --gin_file=models/base.gin --threads=1
  python bench/generation.py --gin_file=models/tiny.gin --threads=1 \
      --model_dir=RUN --thresholds=0,0.5,1,2,4 --plot=threshold_curve.png

Threads: run with `--threads=N` so both sides use N CPU threads (JAX's XLA
CPU flags are set before JAX starts).
"""

import json
import os
import statistics
import sys
import time

from absl import app, flags

_GIN_FILES = flags.DEFINE_multi_string("gin_file", ["models/base.gin"],
                                       "Model preset(s) for the speed test.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_SOURCE_LEN = flags.DEFINE_integer("source_length", 256, "Encoder tokens.")
_TARGET = flags.DEFINE_integer("target_tokens", 64, "Decoder tokens.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls after a warm-up.")
_THREADS = flags.DEFINE_integer("threads", 1, "CPU threads for both sides.")
_SKIP_AR = flags.DEFINE_bool("skip_ar", False, "Time only ELMER.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A fine-tuned run for "
                                 "the threshold curve; none: speed only.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0", "0.5", "1", "2", "3"],
                                "Entropy thresholds (nats) for the curve.")
_EXAMPLES = flags.DEFINE_integer("examples", 64, "Validation examples.")
_PLOT = flags.DEFINE_string("plot", None, "PNG path for the curve.")


def _nar_latency(config, batch: int) -> dict:
  import jax
  import numpy as np
  from elmer_jax import decoding
  from elmer_jax.model.params import init_params
  params = init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, config.vocab_size, (batch, _SOURCE_LEN.value),
                        dtype=np.int32)
  decode = decoding.make_decode_fn(
      config, decoding.DecodeConfig(max_length=_TARGET.value))
  start = time.perf_counter()
  jax.block_until_ready(decode(params, tokens))
  compile_s = time.perf_counter() - start
  latencies = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(decode(params, tokens))
    latencies.append(time.perf_counter() - start)
  return {"compile_s": round(compile_s, 3),
          "median_s": round(statistics.median(latencies), 5),
          "latencies_s": [round(s, 5) for s in latencies]}


def _speed(gin_file: str) -> None:
  from elmer_jax import gin_utils
  gin_utils.parse([gin_file])
  config = gin_utils.macro("MODEL_CONFIG")
  for batch in map(int, _BATCHES.value):
    nar = _nar_latency(config, batch)
    result = {"bench": "generation_speed", "model": gin_file,
              "batch": batch, "source_length": _SOURCE_LEN.value,
              "target_tokens": _TARGET.value, "threads": _THREADS.value,
              "nar": nar}
    if not _SKIP_AR.value:
      import ar_baseline
      ar = ar_baseline.time_bart_greedy(
          config, batch, _SOURCE_LEN.value, _TARGET.value, _REPEATS.value,
          threads=_THREADS.value)
      result.update(ar=ar, speedup=round(ar["median_s"] / nar["median_s"], 2))
    print(json.dumps(result), flush=True)


def _curve(model_dir: str) -> list[dict]:
  import dataclasses
  import jax
  from elmer_jax import decoding, generation_eval, trained_model
  trained_model.parse_run_config(model_dir)
  model = trained_model.load(model_dir)
  train = model.train_config
  base = generation_eval.GenerationEvalConfig(
      mixture_or_task=train.mixture_or_task, max_examples=_EXAMPLES.value,
      encoder_length=train.encoder_length,
      decode=decoding.DecodeConfig(max_length=train.decoder_length))
  examples = generation_eval.read_examples(
      base.mixture_or_task, base.split, base.encoder_length,
      base.decode.max_length, base.max_examples)
  points = []
  for threshold in map(float, _THRESHOLDS.value):
    config = dataclasses.replace(base, decode=dataclasses.replace(
        base.decode, exit_threshold=threshold))
    generation_eval.evaluate(model.config, model.params, model.vocabulary,
                             examples[:config.batch_size], config,
                             config.encoder_length)  # Compile.
    start = time.perf_counter()
    scores, _ = generation_eval.evaluate(model.config, model.params,
                                         model.vocabulary, examples, config,
                                         config.encoder_length)
    seconds = time.perf_counter() - start
    point = {"bench": "generation_threshold", "model_dir": model_dir,
             "checkpoint": model.checkpoint, "threshold": threshold,
             "seconds": round(seconds, 4), **scores}
    print(json.dumps(point), flush=True)
    points.append(point)
  jax.clear_caches()
  return points


def _plot(points: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  x = [p["threshold"] for p in points]
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for ax, (key, label) in zip(axes, (
      ("average_exit_layer", "average exit layer"),
      ("seconds", "decode time (s)"), ("rougeL", "ROUGE-L"))):
    ax.plot(x, [p[key] for p in points], marker="o")
    ax.set_xlabel("entropy threshold (nats)")
    ax.set_ylabel(label)
  fig.suptitle(f"ELMER early exit: {points[0]['checkpoint']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  for gin_file in _GIN_FILES.value:
    _speed(gin_file)
  if _MODEL_DIR.value:
    points = _curve(_MODEL_DIR.value)
    if _PLOT.value:
      _plot(points, _PLOT.value)


if __name__ == "__main__":
  threads = next((a.split("=", 1)[1] for a in sys.argv
                  if a.startswith("--threads=")), "1")
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
      f"{'true' if threads != '1' else 'false'} "
      f"intra_op_parallelism_threads={threads}")
  app.run(main)
