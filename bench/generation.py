"""ELMER's NAR decoding against autoregressive greedy decoding, and what
entropy early exit saves; prints JSON.

Speed (random weights: speed does not depend on them): the latency of one
jit-compiled NAR decode of `target_tokens` slots (encoder included) against
`transformers` greedy `generate` of a same-sized BART producing exactly
`target_tokens` tokens with a KV cache (encoder included), on the same CPU
with the same thread count and dtype (`--dtype`), at each batch size and
source length; `speedup` = AR / NAR. On a GPU host (jax[cuda], a CUDA
torch) both sides run on the GPU (`--ar_device`), the paper's setting.

Early exit (with `--model_dir`, fine-tuned runs): for each batch size and
entropy threshold, the average exit layer, the decoder layers the batches ran
and the slot-layers computed (share of layers x slots), the decode time of
the validation examples (thresholds timed in interleaved rounds, median),
the speedup against threshold 0 of the same model, ROUGE-L and BLEU; then,
per batch size, the fastest threshold within `--max_rouge_drop` of threshold
0's ROUGE-L against `--goal_speedup`. `--plot`: time against ROUGE-L.

  python bench/generation.py --gin_file=models/base.gin --threads=1
  python bench/generation.py --gin_file= --model_dir=RUN_A --model_dir=RUN_B \
      --thresholds=0,0.5,1,2,4 --plot=bench/figures/threshold_curve.png

Threads: `--threads=N` pins the process to N cores before JAX and torch
start, and gives torch N threads: XLA:CPU's flags alone do not hold its
matrix products (YNNPACK's own thread pool) to one core.
"""

import json
import os
import statistics
import sys
import time

from absl import app, flags

_GIN_FILES = flags.DEFINE_multi_string(
    "gin_file", ["models/base.gin"],
    "Model preset(s) for the speed test; --gin_file= alone: none.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_SOURCE_LENS = flags.DEFINE_list("source_lengths", ["64", "256"],
                                 "Encoder tokens of the speed test.")
flags.DEFINE_alias("source_length", "source_lengths")
_TARGET = flags.DEFINE_integer("target_tokens", 64, "Decoder tokens.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls after a warm-up.")
_THREADS = flags.DEFINE_integer("threads", 1, "CPU threads for both sides.")
_AR_DEVICE = flags.DEFINE_enum(
    "ar_device", "auto", ["auto", "cpu", "cuda"], "Where the AR side runs; "
    "auto: cuda when JAX runs on a GPU (the NAR side runs on JAX's default "
    "device), else cpu.")
_SKIP_AR = flags.DEFINE_bool("skip_ar", False, "Time only ELMER.")
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16"], "Compute and weight dtype "
    "of both sides in the speed test (bfloat16: weights held in bf16, as a "
    "serving copy would be; runs on AMX / AVX512-BF16 CPUs' bf16 units).")
_MODEL_DIRS = flags.DEFINE_multi_string(
    "model_dir", [], "Fine-tuned runs for the early-exit curve; none: speed "
    "only.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0", "0.5", "1", "2", "3"],
                                "Entropy thresholds (nats) for the curve.")
_EXAMPLES = flags.DEFINE_integer("examples", 64, "Validation examples.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds of the curve.")
_MAX_DROP = flags.DEFINE_float("max_rouge_drop", 0.5, "ROUGE-L a threshold "
                               "may cost against threshold 0.")
_GOAL = flags.DEFINE_float("goal_speedup", 1.3, "Early-exit speedup goal.")
_PLOT = flags.DEFINE_string("plot", None, "PNG path for the curve.")


def _nar_latency(config, batch: int, source_length: int) -> dict:
  import jax
  import numpy as np
  from elmer_jax import decoding
  from elmer_jax.model.params import init_params
  params = init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, config.vocab_size, (batch, source_length),
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
  config = gin_utils.macro("MODEL_CONFIG").replace(dtype=_DTYPE.value,
                                                   param_dtype=_DTYPE.value)
  for source_length in map(int, _SOURCE_LENS.value):
    for batch in map(int, _BATCHES.value):
      nar = _nar_latency(config, batch, source_length)
      result = {"bench": "generation_speed", "model": gin_file,
                "batch": batch, "source_length": source_length,
                "target_tokens": _TARGET.value, "threads": _THREADS.value,
                "cores": sorted(os.sched_getaffinity(0)),
                "dtype": _DTYPE.value, "device": _device_name(),
                "load_average": os.getloadavg()[0], "nar": nar}
      if not _SKIP_AR.value:
        import ar_baseline
        ar = ar_baseline.time_bart_greedy(
            config, batch, source_length, _TARGET.value, _REPEATS.value,
            threads=_THREADS.value, dtype=_DTYPE.value,
            device=_ar_device())
        result.update(ar=ar,
                      speedup=round(ar["median_s"] / nar["median_s"], 2))
      print(json.dumps(result), flush=True)


def _device_name() -> str:
  import jax
  return jax.devices()[0].device_kind


def _ar_device() -> str:
  import jax
  if _AR_DEVICE.value != "auto":
    return _AR_DEVICE.value
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


def _decode_all(decode_fn, params, rows) -> tuple[float, list]:
  import jax
  start = time.perf_counter()
  outs = jax.device_get([decode_fn(params, r) for r in rows])
  return time.perf_counter() - start, outs


def _curve_points(model_dir: str, batch: int, model, examples) -> list[dict]:
  """One point per threshold at one batch size (see the module docstring)."""
  import dataclasses
  import numpy as np
  from elmer_jax import decoding, generation_eval
  cfg, layers = model.config, model.config.decoder_layers
  train = model.train_config
  eval_config = generation_eval.GenerationEvalConfig(
      batch_size=batch, encoder_length=train.encoder_length,
      decode=decoding.DecodeConfig(max_length=train.decoder_length))
  rows = [decoding.encoder_batch(cfg, [ex["inputs"]
                                       for ex in examples[i:i + batch]],
                                 batch, train.encoder_length)
          for i in range(0, len(examples), batch)]
  thresholds = [float(t) for t in _THRESHOLDS.value]
  fns, points = {}, {}
  for threshold in thresholds:
    config = dataclasses.replace(eval_config, decode=dataclasses.replace(
        eval_config.decode, exit_threshold=threshold))
    scores, _ = generation_eval.evaluate(cfg, model.params, model.vocabulary,
                                         examples, config,
                                         train.encoder_length)
    fns[threshold] = decoding.make_decode_fn(cfg, config.decode)
    _, outs = _decode_all(fns[threshold], model.params, rows)
    slots = len(rows) * batch * train.decoder_length
    points[threshold] = {
        "bench": "generation_threshold", "model_dir": model_dir,
        "checkpoint": model.checkpoint, "batch": batch,
        "threshold": threshold, "examples": len(examples),
        "decoder_layers": layers,
        "average_exit_layer": round(scores["average_exit_layer"], 4),
        "layers_run_per_batch": round(float(np.mean(
            [o.layers_run for o in outs])), 3),
        "slot_layer_passes": round(
            sum(int(o.slot_passes) for o in outs) / (slots * layers), 4),
        "rougeL": round(scores["rougeL"], 2), "bleu": round(scores["bleu"], 2),
        "times_s": []}
  for _ in range(_ROUNDS.value):  # Interleaved, so load drifts hit all.
    for threshold in thresholds:
      points[threshold]["times_s"].append(
          round(_decode_all(fns[threshold], model.params, rows)[0], 4))
  ordered = [points[t] for t in thresholds]
  zero = next((p for p in ordered if p["threshold"] == 0), ordered[0])
  zero_s = statistics.median(zero["times_s"])
  for point in ordered:
    point["decode_s"] = round(statistics.median(point["times_s"]), 4)
    point["speedup_vs_threshold_0"] = round(zero_s / point["decode_s"], 3)
    point["rougeL_drop"] = round(zero["rougeL"] - point["rougeL"], 2)
    point["load_average"] = os.getloadavg()[0]
    print(json.dumps(point), flush=True)
  allowed = [p for p in ordered if p["rougeL_drop"] <= _MAX_DROP.value]
  best = max(allowed, key=lambda p: p["speedup_vs_threshold_0"])
  print(json.dumps({
      "bench": "early_exit_goal", "model_dir": model_dir, "batch": batch,
      "max_rouge_drop": _MAX_DROP.value, "best_threshold": best["threshold"],
      "speedup": best["speedup_vs_threshold_0"], "goal": _GOAL.value,
      "goal_met": best["speedup_vs_threshold_0"] >= _GOAL.value,
      "short_by": round(max(0.0, _GOAL.value
                            - best["speedup_vs_threshold_0"]), 3)}),
        flush=True)
  return ordered


def _curve(model_dir: str) -> list[dict]:
  import jax
  from elmer_jax import generation_eval, trained_model
  trained_model.parse_run_config(model_dir)
  import tasks  # Registers the tasks.
  model = trained_model.load(model_dir, use_vocabulary=tasks.use_vocabulary)
  train = model.train_config
  examples = generation_eval.read_examples(
      train.mixture_or_task, "validation", train.encoder_length,
      train.decoder_length, _EXAMPLES.value)
  points = []
  for batch in map(int, _BATCHES.value):
    points += _curve_points(model_dir, batch, model, examples)
  jax.clear_caches()
  return points


def _plot(points: list[dict], path: str) -> None:
  """Decode time against ROUGE-L, one line per run and batch size, each
  point labelled with its threshold."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  lines = {}
  for p in points:
    lines.setdefault((p["model_dir"], p["batch"]), []).append(p)
  fig, axes = plt.subplots(1, len({b for _, b in lines}), figsize=(11, 4),
                           squeeze=False)
  batches = sorted({b for _, b in lines})
  for (run, batch), line in lines.items():
    ax = axes[0][batches.index(batch)]
    x = [p["decode_s"] / p["examples"] * 1e3 for p in line]
    y = [p["rougeL"] for p in line]
    ax.plot(x, y, marker="o", label=os.path.basename(run.rstrip("/")))
    for xi, yi, p in zip(x, y, line):
      ax.annotate(f"{p['threshold']:g}", (xi, yi), fontsize=7,
                  textcoords="offset points", xytext=(3, 3))
    ax.set_title(f"batch {batch}")
    ax.set_xlabel("decode time per example (ms)")
    ax.set_ylabel("ROUGE-L")
    ax.legend(fontsize=8)
  fig.suptitle("ELMER entropy early exit: time against quality "
               "(labels: threshold, nats)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  for gin_file in filter(None, _GIN_FILES.value):
    _speed(gin_file)
  points = []
  for model_dir in _MODEL_DIRS.value:
    points += _curve(model_dir)
  if points and _PLOT.value:
    _plot(points, _PLOT.value)


if __name__ == "__main__":
  threads = next((a.split("=", 1)[1] for a in sys.argv
                  if a.startswith("--threads=")), "1")
  cores = sorted(os.sched_getaffinity(0))
  if int(threads) > len(cores):
    sys.exit(f"--threads={threads}: this process may use {len(cores)} "
             "cores.")
  os.sched_setaffinity(0, cores[:int(threads)])
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
      f"{'true' if threads != '1' else 'false'} "
      f"intra_op_parallelism_threads={threads}")
  app.run(main)
