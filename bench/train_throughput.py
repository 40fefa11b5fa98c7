"""Throughput of the trainer's own step (optimizer, sharding, donation,
microbatching) on synthetic batches shaped like the pipeline's; prints JSON.

The step is `program.build(...).step`, exactly what `python -m
elmer_jax.train` runs, so this measures the trainer without the input
pipeline (bench/data_pipeline.py times that) and needs neither TensorFlow
nor seqio: a GPU host's image runs it with gin-config added. MFU = model matmul FLOPs
(`elmer_jax/flops.py`) / step time / (peak_tflops * 1e12 * devices).

  python bench/train_throughput.py --gin_file=models/tiny.gin
  python bench/train_throughput.py --gin_file=models/base.gin --batch=2 \
      --encoder_length=128 --decoder_length=128 --steps=3
  python bench/train_throughput.py --gin_file=models/base.gin --batch=32 \
      --gin="config.ElmerConfig.dtype='bfloat16'" --peak_tflops=989

`--peer` also times the PyTorch peer (bench/torch_peer.py: stock
transformers BART, the same LPLM copy-on-exit loss, AdamW) on the same batch
with the same thread count: each of `--rounds` rounds times `--steps` of the
trainer, then `--steps` of the peer, each side's first step after the
other's untimed (in one process that step pays for the other side's memory
state: ELMER-base 4.3 s against 2.95 s); step times are the rounds' medians
and the ratio is the median of the rounds' ratios.
`--skip_exited_tokens` (with `--exit_sampling=permutation`) adds the executed
FLOPs beside the model FLOPs.
"""

import dataclasses
import json
import os
import resource
import time

from absl import app, flags
import jax
import numpy as np

from elmer_jax import flops, gin_utils, partitioning
from elmer_jax.model.params import count_params
from elmer_jax.model.running_tokens import running_capacity
from elmer_jax.objectives import EXIT_SAMPLING
from elmer_jax.training import optimizer as optim
from elmer_jax.training import program as program_lib
from elmer_jax.training.train_step import DROPOUT_PRNGS, ObjectiveConfig
import profile_ops  # bench/, the script's directory

_GIN_FILES = flags.DEFINE_multi_string("gin_file", ["models/tiny.gin"],
                                       "Gin files defining MODEL_CONFIG.")
_BINDINGS = flags.DEFINE_multi_string("gin", [], "Extra gin bindings.")
_BATCH = flags.DEFINE_integer("batch", 16, "Global sequences per step.")
_ENC_LEN = flags.DEFINE_integer("encoder_length", 128, "Encoder tokens.")
_DEC_LEN = flags.DEFINE_integer("decoder_length", 128, "Decoder tokens.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after compilation.")
_MICRO = flags.DEFINE_integer("microbatches", 1, "Gradient accumulation.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adamw", ["adamw", "adafactor"],
                               "Optimizer.")
_MESH = flags.DEFINE_list("ici", ["-1", "1", "1"], "(data, fsdp, tensor).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "Device peak TFLOP/s for MFU; 0 leaves MFU out.")
_SAMPLING = flags.DEFINE_enum("exit_sampling", "iid", EXIT_SAMPLING,
                              "ObjectiveConfig.exit_sampling.")
_FUSED_LOSS = flags.DEFINE_bool("fused_loss", False,
                                "ObjectiveConfig.fused_loss.")
_SKIP = flags.DEFINE_bool("skip_exited_tokens", False,
                          "ObjectiveConfig.skip_exited_tokens.")
_DROPOUT_PRNG = flags.DEFINE_enum("dropout_prng", "threefry2x32",
                                  DROPOUT_PRNGS, "ObjectiveConfig.dropout_prng.")
_PEER = flags.DEFINE_bool("peer", False, "Also time the PyTorch peer.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Timed rounds of --steps steps "
                               "(with --peer, each round times both sides).")
_PROFILE_TOP = flags.DEFINE_integer(
    "profile_top", 0, "Then trace --steps more steps and add the N ops of "
    "most time per step (`top_ops`).")


def _batch(config, batch: int, enc: int, dec: int) -> dict[str, np.ndarray]:
  """Random ids; decoder input `<s>` + `<mask>`s; all targets weighted."""
  rng = np.random.default_rng(0)
  ids = lambda length: rng.integers(5, config.vocab_size, (batch, length),
                                    dtype=np.int32)
  decoder_input = np.full((batch, dec), config.mask_id, np.int32)
  decoder_input[:, 0] = config.bos_id
  return {"encoder_input_tokens": ids(enc),
          "decoder_input_tokens": decoder_input,
          "decoder_target_tokens": ids(dec),
          "decoder_loss_weights": np.ones((batch, dec), np.float32)}


def main(argv):
  del argv
  gin_utils.parse(_GIN_FILES.value, _BINDINGS.value)
  model_config = gin_utils.macro("MODEL_CONFIG")
  objective = ObjectiveConfig(
      microbatches=_MICRO.value, exit_sampling=_SAMPLING.value,
      fused_loss=_FUSED_LOSS.value, skip_exited_tokens=_SKIP.value,
      dropout_prng=_DROPOUT_PRNG.value)
  program = program_lib.build(
      model_config, batch_size=_BATCH.value,
      mesh=partitioning.MeshConfig(ici=tuple(int(x) for x in _MESH.value)),
      objective=objective,
      # Any schedule will do: the bench times steps, not their outcome.
      optimizer=optim.OptimizerConfig(name=_OPTIMIZER.value,
                                      total_steps=2000))
  host_batch = _batch(model_config, _BATCH.value, _ENC_LEN.value,
                      _DEC_LEN.value)
  peer_step = None
  if _PEER.value:
    import torch_peer  # bench/, the script's directory; torch only if asked
    peer_step, peer = torch_peer.make_step(model_config, host_batch,
                                           threads=os.cpu_count())
  with program.context():
    batch = {k: jax.device_put(v, program.data_sharding)
             for k, v in host_batch.items()}
    state = program.init()
    start = time.perf_counter()
    compiled = program.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    ours, theirs, faults, system_s = [], [], 0, 0.0
    for round_index in range(_ROUNDS.value):
      if round_index and peer_step:  # The peer ran last: one untimed step.
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
      before = resource.getrusage(resource.RUSAGE_SELF)
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      ours.append((time.perf_counter() - start) / _STEPS.value)
      after = resource.getrusage(resource.RUSAGE_SELF)
      faults += after.ru_minflt - before.ru_minflt
      system_s += after.ru_stime - before.ru_stime
      if peer_step:
        peer_step()  # Ours ran last: one untimed step of the peer.
        start = time.perf_counter()
        for _ in range(_STEPS.value):
          peer_loss = peer_step()
        theirs.append((time.perf_counter() - start) / _STEPS.value)
    step_s = float(np.median(ours))
    top = None
    if _PROFILE_TOP.value:
      def traced_steps():
        nonlocal state, metrics
        for _ in range(_STEPS.value):
          state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
      top = profile_ops.top_ops(traced_steps, compiled.as_text(),
                                _STEPS.value, _PROFILE_TOP.value)

  model_flops = _BATCH.value * flops.train_flops(model_config, _ENC_LEN.value,
                                                 _DEC_LEN.value)
  executed_flops = model_flops
  if _SKIP.value:
    executed_flops = _BATCH.value * flops.train_flops(
        model_config, _ENC_LEN.value, _DEC_LEN.value,
        running_capacity(_DEC_LEN.value, model_config.decoder_layers))
  device_memory = jax.devices()[0].memory_stats() or {}
  result = {
      "bench": "train_throughput",
      "device": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "mesh": dict(program.mesh.shape),
      "params": count_params(model_config),
      "dtype": model_config.dtype,
      "attention_impl": model_config.attention_impl,
      "fused_qkv": model_config.fused_qkv,
      "objective": dataclasses.asdict(objective),
      "optimizer": _OPTIMIZER.value,
      "batch": _BATCH.value,
      "microbatches": _MICRO.value,
      "encoder_length": _ENC_LEN.value,
      "decoder_length": _DEC_LEN.value,
      "compile_s": round(compile_s, 3),
      "step_s": round(step_s, 5),
      "tokens_per_s": round(_BATCH.value * (_ENC_LEN.value + _DEC_LEN.value)
                            / step_s, 1),
      "model_flops_per_step": model_flops,
      "executed_flops_per_step": executed_flops,
      "model_tflops_per_s": round(model_flops / step_s / 1e12, 4),
      "loss": float(metrics["loss_sum"] / metrics["weight_sum"]),
      "peak_device_bytes": device_memory.get("peak_bytes_in_use"),
      "peak_host_rss_bytes": resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss * 1024,
      # XLA:CPU maps each step's scratch afresh: with 4 KiB pages every
      # page of it faults (README: GLIBC_TUNABLES=glibc.malloc.hugetlb=1).
      "page_faults_per_step": round(faults / len(ours) / _STEPS.value),
      "kernel_s_per_step": round(system_s / len(ours) / _STEPS.value, 3),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
  }
  if _PEAK.value:
    result["mfu"] = round(model_flops / step_s / (
        _PEAK.value * 1e12 * jax.device_count()), 4)
  if peer_step:
    peer.update(step_s=round(float(np.median(theirs)), 5), loss=peer_loss)
    peer["tokens_per_s"] = round(
        _BATCH.value * (_ENC_LEN.value + _DEC_LEN.value) / peer["step_s"], 1)
    result["peer"] = peer
    # Per round, both sides timed back to back: the host's drift between
    # rounds cancels in each round's ratio.
    ratios = [t / o for o, t in zip(ours, theirs)]
    result["throughput_ratio"] = round(float(np.median(ratios)), 3)
    result["throughput_ratio_per_round"] = [round(r, 3) for r in ratios]
  if top is not None:
    result["top_ops"] = top
  result["load_average"] = os.getloadavg()
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
