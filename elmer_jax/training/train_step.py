"""The train step: LPLM (pretraining) or soft exit (fine-tuning as released),
microbatched gradients, update.

Randomness is step-indexed: the step's key is `fold_in(seed, step)`, so a
resumed run draws the same exit layers and dropout masks as an uninterrupted
one. Exit layers are drawn for the whole global batch before it is split into
microbatches, so microbatching changes memory, not the result. The loss is the
token mean over the whole global batch (gradient sums divided by the global
token count), not a mean of microbatch means.
"""

import dataclasses
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from elmer_jax import lm_head_loss, objectives
from elmer_jax.model import Elmer
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.off_ramp import GOLD_MIX_RNG
from elmer_jax.model.params import init_params
from elmer_jax.model.running_tokens import running_capacity

Batch = Mapping[str, jax.Array]

OBJECTIVES = ("lplm", "soft_exit")
# jax.random implementations the dropout key may use ("rbg" family: cheaper
# random bits on accelerators than threefry).
DROPOUT_PRNGS = ("threefry2x32", "rbg", "unsafe_rbg")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """What the step optimises, with these options.

  `name`: `lplm` (each token's loss at a drawn exit layer, `exit_sampling`)
  or `soft_exit` (the mean of all layers' losses; needs
  `ElmerConfig.soft_exit`; in training each fed-back token is the gold label
  with probability `gold_mix_rate`, never in evaluation).

  Speed settings (each exact, tested against the plain path):
  `fused_loss`: LPLM's tied LM head and cross-entropy as one custom-VJP
  function (lm_head_loss.py), the vocabulary padded to `vocab_multiple` at
  compute time. `dropout_prng`: the PRNG of dropout keys (exit layers always
  use threefry); part of the run's config, so a resumed run draws the same
  masks. `skip_exited_tokens`: decoder layers run queries, cross-attention
  and the FFN only on tokens that have not exited (model/running_tokens.py;
  needs `permutation` sampling and unpacked batches).
  """

  exit_sampling: str = "iid"
  label_smoothing: float = 0.0
  z_loss: float = 0.0
  microbatches: int = 1
  name: str = "lplm"
  gold_mix_rate: float = 0.3
  fused_loss: bool = False
  vocab_multiple: int = 128
  dropout_prng: str = "threefry2x32"
  skip_exited_tokens: bool = False

  def __post_init__(self):
    if self.dropout_prng not in DROPOUT_PRNGS:
      raise ValueError(f"ObjectiveConfig.dropout_prng={self.dropout_prng!r}; "
                       f"expected one of {DROPOUT_PRNGS}.")
    if self.skip_exited_tokens and (self.name != "lplm"
                                    or self.exit_sampling != "permutation"):
      raise ValueError(
          "ObjectiveConfig.skip_exited_tokens needs name='lplm' and "
          "exit_sampling='permutation' (which bounds the tokens running per "
          f"layer); got name={self.name!r}, "
          f"exit_sampling={self.exit_sampling!r}.")
    if self.vocab_multiple < 1:
      raise ValueError(f"ObjectiveConfig.vocab_multiple={self.vocab_multiple}"
                       " must be >= 1.")
    if self.name not in OBJECTIVES:
      raise ValueError(f"ObjectiveConfig.name={self.name!r}; expected one of "
                       f"{OBJECTIVES}.")
    if not 0.0 <= self.gold_mix_rate <= 1.0:
      raise ValueError(f"ObjectiveConfig.gold_mix_rate={self.gold_mix_rate} "
                       "is not a probability in [0, 1].")


def init_train_state(model_config: ElmerConfig,
                     optimizer: optax.GradientTransformation,
                     rng: jax.Array, boxed: bool = False) -> TrainState:
  """A fresh state. `boxed=True` keeps the logical-axis boxes on parameters
  and on the optimizer slots that mirror them (for deriving shardings)."""
  params = init_params(model_config, rng, boxed=boxed)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=jax.jit(optimizer.init)(params))


def _model_inputs(batch: Batch) -> dict[str, jax.Array]:
  packing = ("encoder_segment_ids", "decoder_segment_ids",
             "encoder_positions", "decoder_positions")
  return {k: batch[k] for k in packing if k in batch}


def draw_exit_layers(key: jax.Array, batch: Batch, num_layers: int,
                     sampling: str) -> jax.Array:
  """Exit layers for every target token of `batch` (balanced per sequence
  or packed segment under `permutation`)."""
  sequences = batch.get("decoder_segment_ids",
                        (batch["decoder_loss_weights"] > 0).astype(jnp.int32))
  return objectives.sample_exit_layers(
      key, batch["decoder_target_tokens"].shape, num_layers, sampling,
      sequences)


def _poison_on_overflow(sums: dict[str, jax.Array], exits: jax.Array,
                        model: Elmer) -> dict[str, jax.Array]:
  """A NaN loss (the loop stops on it, naming the step) if some row has more
  running tokens at a layer than the decoder computed: exits that did not
  come from `permutation` sampling."""
  layers = jnp.arange(len(model.running_capacity))
  running = jnp.sum(exits[..., None] >= layers, axis=-2)
  overflow = jnp.any(running > jnp.asarray(model.running_capacity))
  return dict(sums, loss_sum=jnp.where(overflow, jnp.nan, sums["loss_sum"]))


def make_loss_sums(model_config: ElmerConfig, objective: ObjectiveConfig
                   ) -> Callable[..., dict[str, jax.Array]]:
  """Returns loss_sums(params, batch, exits, dropout_key, deterministic) ->
  the objective's metric sums (`loss_sum` is what the step differentiates).
  Soft exit ignores `exits`: every token leaves at the last layer."""
  model = Elmer(model_config)
  if (objective.name == "soft_exit") != model_config.soft_exit:
    raise ValueError(
        f"ObjectiveConfig.name={objective.name!r} needs a model with "
        f"ElmerConfig.soft_exit={objective.name == 'soft_exit'} (the "
        f"`concat_head`); got soft_exit={model_config.soft_exit}.")

  def lplm_model(batch) -> Elmer:
    if not objective.skip_exited_tokens:
      return model
    if "decoder_segment_ids" in batch:
      raise ValueError("ObjectiveConfig.skip_exited_tokens needs unpacked "
                       "batches (TrainConfig.pack=False): a packed row's "
                       "segment count does not bound its running tokens.")
    return Elmer(model_config, running_capacity=running_capacity(
        batch["decoder_input_tokens"].shape[1], model_config.decoder_layers))

  def loss_sums(params, batch, exits, dropout_key, deterministic=False):
    out = lplm_model(batch).apply(
        {"params": params}, batch["encoder_input_tokens"],
        batch["decoder_input_tokens"], exits, deterministic=deterministic,
        rngs={"dropout": dropout_key}, **_model_inputs(batch))
    targets, weights = (batch["decoder_target_tokens"],
                        batch["decoder_loss_weights"])
    if objective.fused_loss:
      per_token = lm_head_loss.head_cross_entropy(
          out.exit_states, params["shared"]["embedding"],
          # A buffer, as in the model's own off-ramp: no gradient.
          jax.lax.stop_gradient(params["final_logits_bias"]), targets,
          dtype=model_config.compute_dtype,
          vocab_multiple=objective.vocab_multiple,
          label_smoothing=objective.label_smoothing, z_loss=objective.z_loss)
      _, sums = objectives.lplm_sums(*per_token, weights, exits,
                                     model_config.decoder_layers)
    else:
      _, sums = objectives.lplm_loss(
          out.logits, targets, weights, exits, model_config.decoder_layers,
          label_smoothing=objective.label_smoothing, z_loss=objective.z_loss)
    if objective.skip_exited_tokens:
      sums = _poison_on_overflow(sums, exits, lplm_model(batch))
    return sums

  def soft_exit_sums(params, batch, exits, dropout_key, deterministic=False):
    del exits
    dropout_key, gold_key = jax.random.split(dropout_key)
    targets = batch["decoder_target_tokens"]
    out = model.apply({"params": params}, batch["encoder_input_tokens"],
                      batch["decoder_input_tokens"],
                      deterministic=deterministic, return_all_layers=True,
                      gold_tokens=None if deterministic else targets,
                      gold_mix_rate=objective.gold_mix_rate,
                      rngs={"dropout": dropout_key, GOLD_MIX_RNG: gold_key},
                      **_model_inputs(batch))
    _, sums = objectives.soft_exit_loss(
        out.layer_logits, targets, batch["decoder_loss_weights"],
        label_smoothing=objective.label_smoothing, z_loss=objective.z_loss)
    return sums

  return soft_exit_sums if objective.name == "soft_exit" else loss_sums


def make_train_step(model_config: ElmerConfig,
                    optimizer: optax.GradientTransformation,
                    objective: ObjectiveConfig, seed: int,
                    learning_rate: Callable[[jax.Array], jax.Array]
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Returns step(state, batch) -> (state, metric sums + grad_norm, lr)."""
  loss_sums = make_loss_sums(model_config, objective)
  root = jax.random.key(seed)
  dropout_root = (None if objective.dropout_prng == "threefry2x32" else
                  jax.random.key(seed, impl=objective.dropout_prng))

  def differentiable(params, batch, exits, dropout_key):
    sums = loss_sums(params, batch, exits, dropout_key)
    return sums["loss_sum"], sums

  def step(state: TrainState, batch: Batch):
    key = jax.random.fold_in(root, state.step)
    exit_key, dropout_key = jax.random.split(key)
    if dropout_root is not None:
      dropout_key = jax.random.fold_in(dropout_root, state.step)
    targets = batch["decoder_target_tokens"]
    exits = draw_exit_layers(exit_key, batch, model_config.decoder_layers,
                             objective.exit_sampling)
    micro = objective.microbatches
    if targets.shape[0] % micro:
      raise ValueError(f"Batch of {targets.shape[0]} does not split into "
                       f"ObjectiveConfig.microbatches={micro}.")
    split = lambda x: x.reshape((micro, x.shape[0] // micro) + x.shape[1:])
    chunks = jax.tree.map(split, dict(batch, exit_layers=exits))

    def accumulate(carry, inputs):
      chunk, index = inputs
      grads_sum, sums_total = carry
      chunk_exits = chunk.pop("exit_layers")
      (_, sums), grads = jax.value_and_grad(differentiable, has_aux=True)(
          state.params, chunk, chunk_exits,
          jax.random.fold_in(dropout_key, index))
      add = lambda a, b: a + b
      return (jax.tree.map(add, grads_sum, grads),
              jax.tree.map(add, sums_total, sums)), None

    zero_grads = jax.tree.map(jnp.zeros_like, state.params)
    zero_sums = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(lambda: loss_sums(
            state.params, jax.tree.map(lambda x: x[0], chunks),
            chunks["exit_layers"][0], dropout_key)))
    (grads, sums), _ = jax.lax.scan(accumulate, (zero_grads, zero_sums),
                                    (chunks, jnp.arange(micro)))
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums["weight_sum"], 1.0),
                         grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(sums, grad_norm=optax.tree.norm(grads),
                   learning_rate=learning_rate(state.step))
    return TrainState(step=state.step + 1, params=params,
                      opt_state=opt_state), metrics

  return step
