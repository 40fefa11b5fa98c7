"""Where the LPLM train step's time goes on this machine; prints JSON.

Times, interleaved round-robin in one process (so a shared machine's load
hits all of them alike), the full step and the pieces it is made of or can be
traded for: forward+backward with and without exit sampling and dropout, the
plain and the fused LM head + loss, the per-exit-layer metric sums, and the
embedding gathers with their backward. Medians over `--rounds`.

  python bench/step_profile.py --gin_file=models/tiny_sample.gin \
      --gin=config.ElmerConfig.d_model=128 --gin=config.ElmerConfig.d_ff=512 \
      --gin=config.ElmerConfig.decoder_layers=2 --batch=8
"""

import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from elmer_jax import gin_utils, lm_head_loss, objectives
from elmer_jax.model import dropout
from elmer_jax.training import train_step

_GIN_FILES = flags.DEFINE_multi_string("gin_file", ["models/tiny.gin"],
                                       "Gin files defining MODEL_CONFIG.")
_BINDINGS = flags.DEFINE_multi_string("gin", [], "Extra gin bindings.")
_BATCH = flags.DEFINE_integer("batch", 8, "Sequences per step.")
_ENC_LEN = flags.DEFINE_integer("encoder_length", 128, "Encoder tokens.")
_DEC_LEN = flags.DEFINE_integer("decoder_length", 128, "Decoder tokens.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds.")


def _batch(config, batch, enc, dec):
  rng = np.random.default_rng(0)
  ids = lambda n: jnp.asarray(rng.integers(5, config.vocab_size, (batch, n)),
                              jnp.int32)
  dec_in = jnp.full((batch, dec), config.mask_id, jnp.int32)
  return {"encoder_input_tokens": ids(enc),
          "decoder_input_tokens": dec_in.at[:, 0].set(config.bos_id),
          "decoder_target_tokens": ids(dec),
          "decoder_loss_weights": jnp.ones((batch, dec), jnp.float32)}


def _dropout_draws(config, batch, s, t) -> int:
  """Dropout masks' elements per step: embeddings, attention weights, the
  hidden state after each sublayer and the FFN activations."""
  d, f, h = config.d_model, config.d_ff, config.num_heads
  encoder = s * d + config.encoder_layers * (h * s * s + 2 * s * d + s * f)
  decoder = t * d + config.decoder_layers * (h * t * t + h * t * s + 3 * t * d
                                             + t * f)
  return batch * (encoder + decoder)


def _programs(config, batch):
  shape = batch["decoder_target_tokens"].shape
  layers = config.decoder_layers
  opt = optax.adamw(1e-4)
  state = train_step.init_train_state(config, opt, jax.random.key(0))
  params = state.params

  def fb(objective, sample=True, deterministic=False):
    sums_fn = train_step.make_loss_sums(config, objective)
    fixed = objectives.sample_exit_layers(jax.random.key(9), shape, layers,
                                          objective.exit_sampling)

    def run(p, key, batch):
      exit_key, drop_key = jax.random.split(key)
      exits = (train_step.draw_exit_layers(exit_key, batch, layers,
                                           objective.exit_sampling)
               if sample else fixed)
      loss = lambda q: sums_fn(q, batch, exits, drop_key,
                               deterministic)["loss_sum"]
      return jax.value_and_grad(loss)(p)
    return jax.jit(run), (params, jax.random.key(1), batch)

  plain = train_step.ObjectiveConfig()
  full = train_step.make_train_step(config, opt, plain, 0, lambda s: 0.0)
  states = jax.random.normal(jax.random.key(2), shape + (config.d_model,))
  table, bias = params["shared"]["embedding"], params["final_logits_bias"]
  targets, weights = batch["decoder_target_tokens"], batch[
      "decoder_loss_weights"]
  exits = objectives.sample_exit_layers(jax.random.key(3), shape, layers)

  def plain_head(s, e, b, targets, weights, exits):
    logits = jnp.dot(s, e.T) + b
    return objectives.lplm_loss(logits, targets, weights, exits, layers)[0]

  def fused_head(s, e, b, targets, weights, exits):
    per_token = lm_head_loss.head_cross_entropy(s, e, b, targets)
    return objectives.lplm_sums(*per_token, weights, exits, layers)[0]

  head_args = (states, table, bias, targets, weights, exits)

  per_token = lm_head_loss.head_cross_entropy(states, table, bias, targets)
  ids = jnp.concatenate([batch["encoder_input_tokens"],
                         batch["decoder_input_tokens"]], axis=1)
  return {
      "train_step (AdamW)": (jax.jit(full), (state, batch)),
      "forward_backward": fb(plain),
      "forward_backward, exits fixed": fb(plain, sample=False),
      "forward_backward, no dropout": fb(plain, deterministic=True),
      "forward_backward, fused loss": fb(
          train_step.ObjectiveConfig(fused_loss=True)),
      "forward_backward, permutation": fb(
          train_step.ObjectiveConfig(exit_sampling="permutation")),
      "forward_backward, permutation + skip exited": fb(
          train_step.ObjectiveConfig(exit_sampling="permutation",
                                     skip_exited_tokens=True)),
      "exit sampling (iid)": (jax.jit(
          lambda k: objectives.sample_exit_layers(k, shape, layers)),
                              (jax.random.key(4),)),
      "exit sampling (permutation)": (jax.jit(
          lambda k, b: train_step.draw_exit_layers(k, b, layers,
                                                   "permutation")),
                                      (jax.random.key(4), batch)),
      "LM head + loss, plain (fwd+bwd)": (jax.jit(jax.value_and_grad(
          plain_head, argnums=(0, 1, 2))), head_args),
      "LM head + loss, fused (fwd+bwd)": (jax.jit(jax.value_and_grad(
          fused_head, argnums=(0, 1, 2))), head_args),
      "per-exit-layer metric sums": (jax.jit(
          lambda *a: objectives.lplm_sums(*a, layers)),
                                     per_token + (weights, exits)),
      "embedding gathers (fwd+bwd)": (jax.jit(jax.grad(
          lambda e, i: jnp.sum(jnp.take(e, i, axis=0) ** 2))), (table, ids)),
      "dropout bits (as many as the step draws)": (jax.jit(
          lambda k: dropout.keep_mask(k, (_dropout_draws(
              config, shape[0], _ENC_LEN.value, shape[1]),),
                                      config.dropout_rate).sum()),
                                                   (jax.random.key(5),)),
  }


def main(argv):
  del argv
  gin_utils.parse(_GIN_FILES.value, _BINDINGS.value)
  config = gin_utils.macro("MODEL_CONFIG")
  batch = _batch(config, _BATCH.value, _ENC_LEN.value, _DEC_LEN.value)
  programs = _programs(config, batch)
  for fn, args in programs.values():
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in programs}
  for _ in range(_ROUNDS.value):
    for name, (fn, args) in programs.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  median = {k: float(np.median(v)) for k, v in times.items()}
  step = median["train_step (AdamW)"]
  print(json.dumps({
      "bench": "step_profile", "device": jax.devices()[0].device_kind,
      "batch": _BATCH.value, "encoder_length": _ENC_LEN.value,
      "decoder_length": _DEC_LEN.value, "d_model": config.d_model,
      "vocab_size": config.vocab_size, "load_average": os.getloadavg(),
      "seconds": {k: round(v, 5) for k, v in median.items()},
      "share_of_step": {k: round(v / step, 3) for k, v in median.items()}}))


if __name__ == "__main__":
  app.run(main)
