"""Forward+backward of the LPLM loss for a model preset; prints JSON.

The step is what pretraining computes per microbatch (exit sampling, the
copy-on-exit forward, the loss and all parameter gradients), without the
optimizer. MFU = model FLOPs (`elmer_jax.flops`, matmuls only) / step time /
(peak_tflops * 1e12). XLA's own count is printed beside it for reference; it
varies with the dtype and backend, so it is not used for MFU.

  python bench/forward_backward.py --gin_file=models/tiny.gin
  python bench/forward_backward.py --gin_file=models/base.gin \
      --gin.config.ElmerConfig.dtype="'bfloat16'" --batch=32 --peak_tflops=989
"""

import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from elmer_jax import flops, gin_utils, objectives
from elmer_jax.model import Elmer
from elmer_jax.model.params import count_params, init_params

_GIN_FILES = flags.DEFINE_multi_string("gin_file", ["models/tiny.gin"],
                                  "Gin files defining MODEL_CONFIG.")
_BINDINGS = flags.DEFINE_multi_string("gin", [], "Extra gin bindings.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_ENC_LEN = flags.DEFINE_integer("encoder_length", 128, "Encoder tokens.")
_DEC_LEN = flags.DEFINE_integer("decoder_length", 128, "Decoder tokens.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after compilation.")
_SAMPLING = flags.DEFINE_enum("exit_sampling", "iid", objectives.EXIT_SAMPLING,
                              "How exit layers are drawn.")
_DROPOUT = flags.DEFINE_bool("dropout", True,
                              "Apply dropout (training mode) in the step.")
_PRNG = flags.DEFINE_string("prng_impl", None,
                            "jax_default_prng_impl, e.g. threefry2x32, rbg, "
                            "unsafe_rbg; default: JAX's.")
_PROFILE = flags.DEFINE_string(
    "profile_dir", None, "After timing, trace two more steps into this "
    "directory (TensorBoard profile plus a Perfetto JSON trace).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "Device peak TFLOP/s for MFU; 0 leaves MFU out.")


def main(argv):
  del argv
  if _PRNG.value:
    jax.config.update("jax_default_prng_impl", _PRNG.value)
  gin_utils.parse(_GIN_FILES.value, _BINDINGS.value)
  config = gin_utils.macro("MODEL_CONFIG")
  model = Elmer(config)
  params = init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _DEC_LEN.value)
  enc = jnp.asarray(rng.integers(4, config.vocab_size,
                                 (_BATCH.value, _ENC_LEN.value)), jnp.int32)
  targets = jnp.asarray(rng.integers(4, config.vocab_size, shape), jnp.int32)
  dec = jnp.full(shape, config.mask_id, jnp.int32).at[:, 0].set(config.bos_id)
  weights = jnp.ones(shape, jnp.float32)

  @jax.jit
  def step(params, key):
    exit_key, dropout_key = jax.random.split(key)
    exits = objectives.sample_exit_layers(exit_key, shape,
                                          config.decoder_layers,
                                          _SAMPLING.value)

    def loss_fn(p):
      out = model.apply({"params": p}, enc, dec, exits, deterministic=not _DROPOUT.value,
                        rngs={"dropout": dropout_key})
      return objectives.lplm_loss(out.logits, targets, weights, exits,
                                  config.decoder_layers)

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, jax.tree.reduce(lambda a, g: a + jnp.sum(g * g), grads, 0.0)

  start = time.perf_counter()
  compiled = step.lower(params, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
  model_flops = _BATCH.value * flops.train_flops(config, _ENC_LEN.value,
                                                 _DEC_LEN.value)

  jax.block_until_ready(compiled(params, jax.random.key(2)))
  losses, start = [], time.perf_counter()
  for i in range(_STEPS.value):
    loss, grad_sq = compiled(params, jax.random.key(3 + i))
    losses.append(loss)
  jax.block_until_ready(losses)
  step_s = (time.perf_counter() - start) / _STEPS.value

  if _PROFILE.value:
    with jax.profiler.trace(_PROFILE.value, create_perfetto_trace=True):
      jax.block_until_ready([compiled(params, jax.random.key(i))
                             for i in range(2)])

  tokens = _BATCH.value * (_ENC_LEN.value + _DEC_LEN.value)
  memory = jax.devices()[0].memory_stats() or {}
  result = {
      "bench": "forward_backward",
      "device": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "params": count_params(config),
      "dtype": config.dtype,
      "dropout": _DROPOUT.value,
      "prng_impl": jax.config.jax_default_prng_impl,
      "batch": _BATCH.value,
      "encoder_length": _ENC_LEN.value,
      "decoder_length": _DEC_LEN.value,
      "compile_s": round(compile_s, 3),
      "step_s": round(step_s, 5),
      "tokens_per_s": round(tokens / step_s, 1),
      "model_flops_per_step": model_flops,
      "model_tflops_per_s": round(model_flops / step_s / 1e12, 2),
      "xla_flops_per_step": xla_flops,
      "loss": float(losses[-1]),
      "grad_norm": float(jnp.sqrt(grad_sq)),
      "peak_bytes_in_use": memory.get("peak_bytes_in_use"),
  }
  if _PEAK.value:
    result["mfu"] = round(model_flops / step_s / (_PEAK.value * 1e12), 4)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
