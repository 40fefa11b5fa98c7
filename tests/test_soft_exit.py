"""Soft exit (fine-tuning as released): loss against NumPy, forward values and
gradients against a PyTorch reference on HF's BART layers, gold mixing rate,
parameters and the train-step objective."""

import functools

import flax
import jax
import numpy as np
import pytest
import torch

from elmer_jax import objectives
from elmer_jax.export import param_map
from elmer_jax.model import Elmer
from elmer_jax.model import ElmerConfig
from elmer_jax.model import params as model_params
from elmer_jax.training import optimizer as optim
from elmer_jax.training import train_step
from tests import hf_reference
from tests.helpers import SOFT, TINY, compiled_apply, random_tokens, variants
LAYERS = SOFT.decoder_layers


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# Jitted, as training runs it (an eager call compiles every op on its own).
_soft_exit_loss = jax.jit(objectives.soft_exit_loss,
                          static_argnames=("label_smoothing", "z_loss"))


def test_loss_is_the_mean_of_per_layer_token_means():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 5, 7)).astype(np.float32) * 2
  targets = rng.integers(0, 7, (2, 5)).astype(np.int32)
  weights = np.ones((2, 5), np.float32)
  weights[1, 3:] = 0
  smoothing = 0.1
  log_p = _log_softmax(logits.astype(np.float64))
  nll = -np.take_along_axis(log_p, targets[None, ..., None], -1)[..., 0]
  smoothed = (1 - smoothing) * nll - smoothing * log_p.mean(-1)
  per_layer = (nll * weights).sum((1, 2)) / weights.sum()
  expected = ((smoothed * weights).sum((1, 2)) / weights.sum()).mean()

  loss, sums = _soft_exit_loss(logits, targets, weights,
                               label_smoothing=smoothing)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  summary = objectives.summarize(sums)
  for layer in range(3):
    np.testing.assert_allclose(summary[f"layer_{layer}/cross_entropy"],
                               per_layer[layer], rtol=1e-5)
  correct = (logits.argmax(-1) == targets[None]) * weights
  np.testing.assert_allclose(summary["accuracy"],
                             correct[-1].sum() / weights.sum())
  np.testing.assert_allclose(summary["cross_entropy"], per_layer[-1],
                             rtol=1e-5)
  assert summary["average_exit_layer"] == 2
  assert not any(k.startswith("exit_layer_") for k in summary)

  # Sums of row halves add up to the sums of the whole batch.
  halves = [_soft_exit_loss(logits[:, i:i + 1], targets[i:i + 1],
                             weights[i:i + 1], label_smoothing=smoothing)[1]
            for i in range(2)]
  for key, value in sums.items():
    np.testing.assert_allclose(halves[0][key] + halves[1][key], value,
                               rtol=1e-5, err_msg=key)


def _torch_soft_exit(hf, concat_head, enc, dec, pad_id, gold=None):
  """Per-layer logits of the released soft-exit decoder, written from
  RUCAIBox's fine-tune/modeling_bart.py on HF's layers: before every layer
  but the first, feed concat_head([h, embed(argmax or gold)])."""
  decoder = hf.model.decoder
  encoded, hidden, self_mask, cross_mask = hf_reference.decoder_start(
      hf, enc, dec, pad_id)
  head = lambda h: hf.lm_head(h) + hf.final_logits_bias
  layer_logits = []
  for index, layer in enumerate(decoder.layers):
    if index > 0:
      fed = (head(hidden).argmax(-1) if gold is None else
             torch.as_tensor(gold, dtype=torch.long))
      hidden = concat_head(torch.cat([hidden, decoder.embed_tokens(fed)], -1))
    hidden = layer(hidden, attention_mask=self_mask,
                   encoder_hidden_states=encoded,
                   encoder_attention_mask=cross_mask, use_cache=False)
    if isinstance(hidden, tuple):
      hidden = hidden[0]
    layer_logits.append(head(hidden))
  return torch.stack(layer_logits)


def _inputs(config, seed):
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, config, 3, 11)
  enc[2, 8:] = config.pad_id
  dec = np.full((3, 10), config.mask_id, np.int32)
  dec[:, 0] = config.bos_id
  dec[1, 7:] = config.pad_id
  gold = random_tokens(rng, config, 3, 10)
  return enc, dec, gold


@pytest.mark.parametrize("scan,gold_rate", variants(
    (False, 1.0), (False, 0.0), (True, 0.0), (True, 1.0)))
def test_forward_matches_torch_reference(scan, gold_rate):
  config = SOFT.replace(scan_layers=scan)
  hf, concat_head, params = hf_reference.random_soft_exit_model(config, seed=11)
  enc, dec, gold = _inputs(config, 12)
  out = compiled_apply(config)(
      {"params": params}, enc, dec, return_all_layers=True, gold_tokens=gold,
      gold_mix_rate=gold_rate)
  with torch.no_grad():
    ref = _torch_soft_exit(hf, concat_head, enc, dec, config.pad_id,
                           gold if gold_rate else None).numpy()
  np.testing.assert_allclose(np.asarray(out.layer_logits), ref, atol=1e-4,
                             rtol=0)
  np.testing.assert_allclose(np.asarray(out.logits), ref[-1], atol=1e-4,
                             rtol=0)
  # Control: the feedback matters (plain BART layers give other logits).
  plain = hf_reference.bidirectional_logits(hf, enc, dec, config.pad_id)
  assert np.abs(ref[-1] - plain).max() > 1e-2


@pytest.mark.parametrize("gold_rate", [0.0, 1.0])
def test_gradients_match_torch_autograd(gold_rate):
  hf, concat_head, params = hf_reference.random_soft_exit_model(SOFT, seed=13)
  enc, dec, gold = _inputs(SOFT, 14)
  weights = (dec != SOFT.pad_id).astype(np.float32)

  def loss(p):
    out = Elmer(SOFT).apply({"params": p}, enc, dec, return_all_layers=True,
                            gold_tokens=gold, gold_mix_rate=gold_rate)
    return objectives.soft_exit_loss(out.layer_logits, gold, weights)[0]

  ours = param_map.to_hf(jax.jit(jax.grad(loss))(params), SOFT)
  hf.zero_grad()
  concat_head.zero_grad()
  logits = _torch_soft_exit(hf, concat_head, enc, dec, SOFT.pad_id,
                            gold if gold_rate else None)
  nll = torch.nn.functional.cross_entropy(
      logits.reshape(-1, SOFT.vocab_size),
      torch.as_tensor(gold, dtype=torch.long).repeat(LAYERS, 1, 1).reshape(-1),
      reduction="none").reshape(LAYERS, -1)
  w = torch.as_tensor(weights).reshape(-1)
  ((nll * w).sum(-1) / w.sum()).mean().backward()
  reference = {name: p.grad.numpy() for name, p in hf.named_parameters()
               if p.grad is not None}
  reference["concat_head.weight"] = concat_head.weight.grad.numpy()
  for name, grad in reference.items():
    key = "model.shared.weight" if name == "lm_head.weight" else name
    np.testing.assert_allclose(ours[key], grad, atol=2e-5, rtol=1e-3,
                               err_msg=name)
  assert np.abs(reference["concat_head.weight"]).max() > 1e-3


def test_gold_tokens_are_fed_at_the_mixing_rate():
  """Layer 1's input is per token either the fed-back argmax or the gold
  embedding; its query projection (per token) shows which one was used."""
  config = SOFT.replace(max_positions=64)
  _, _, params = hf_reference.random_soft_exit_model(config, seed=15)
  rng = np.random.default_rng(16)
  enc = random_tokens(rng, config, 32, 12)
  dec = np.full((32, 64), config.mask_id, np.int32)
  dec[:, 0] = config.bos_id
  gold = random_tokens(rng, config, 32, 64)

  @functools.partial(jax.jit, static_argnums=0)
  def layer1_queries(rate, key):
    _, state = Elmer(config).apply(
        {"params": params}, enc, dec, gold_tokens=gold, gold_mix_rate=rate,
        rngs={"gold_mix": key}, capture_intermediates=True,
        mutable=["intermediates"])
    q = state["intermediates"]["decoder"]["layers_1"]["self_attn"]["q_proj"]
    return q["__call__"][0]

  queries = lambda rate, key=0: np.asarray(layer1_queries(
      rate, jax.random.key(key)))

  predicted, fed_gold = queries(0.0), queries(1.0)
  mixed = queries(0.3)
  is_gold = np.all(np.isclose(mixed, fed_gold, atol=1e-5), axis=(-2, -1))
  is_predicted = np.all(np.isclose(mixed, predicted, atol=1e-5),
                        axis=(-2, -1))
  differ = ~np.all(np.isclose(predicted, fed_gold, atol=1e-5), axis=(-2, -1))
  assert np.all(is_gold | is_predicted)
  assert differ.sum() > 1500
  assert abs(is_gold[differ].mean() - 0.3) < 0.05
  # Another key draws other tokens.
  assert not np.array_equal(mixed, queries(0.3, key=1))


def test_parameters_and_hf_names():
  base = model_params.flat_shapes(TINY)
  soft = model_params.flat_shapes(SOFT)
  assert set(soft) - set(base) == {"concat_head"}
  assert soft["concat_head"] == (2 * SOFT.d_model, SOFT.d_model)
  axes = flax.traverse_util.flatten_dict(model_params.logical_axes(SOFT),
                                         sep="/")
  assert tuple(axes["concat_head"]) == ("mlp", "embed")
  # ELMER-base + a 1536 x 768 concat_head (written out by hand).
  assert model_params.count_params(ElmerConfig(soft_exit=True)) == (
      139_420_416 + 1_179_648)
  for scan in (False, True):
    config = SOFT.replace(scan_layers=scan)
    ours = hf_reference.random_params(config, seed=1)
    hf = param_map.to_hf(ours, config)
    assert hf["concat_head.weight"].shape == (SOFT.d_model, 2 * SOFT.d_model)
    jax.tree.map(np.testing.assert_array_equal, ours,
                 param_map.from_hf(hf, config))


def test_gold_tokens_need_a_soft_exit_model():
  params = hf_reference.random_params(TINY, seed=0)
  enc, dec, gold = _inputs(TINY, 0)
  with pytest.raises(ValueError, match="soft_exit=False"):
    Elmer(TINY).apply({"params": params}, enc, dec, gold_tokens=gold,
                      gold_mix_rate=1.0)
  with pytest.raises(ValueError, match="soft_exit"):
    train_step.make_loss_sums(TINY, train_step.ObjectiveConfig(
        name="soft_exit"))
  with pytest.raises(ValueError, match="ObjectiveConfig.name='mle'"):
    train_step.ObjectiveConfig(name="mle")


@pytest.mark.integration  # A full soft-exit train step.
def test_train_step_objective():
  """Eval sums equal the torch loss without gold; training lowers it."""
  config = SOFT.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                        activation_dropout_rate=0.0)
  hf, concat_head, params = hf_reference.random_soft_exit_model(config, seed=17)
  enc, dec, gold = _inputs(config, 18)
  weights = (dec != config.pad_id).astype(np.int32)
  batch = dict(encoder_input_tokens=enc, decoder_input_tokens=dec,
               decoder_target_tokens=gold, decoder_loss_weights=weights)
  objective = train_step.ObjectiveConfig(name="soft_exit", microbatches=3)
  sums = train_step.make_loss_sums(config, objective)(
      params, batch, None, jax.random.key(0), deterministic=True)
  with torch.no_grad():
    logits = _torch_soft_exit(hf, concat_head, enc, dec, config.pad_id)
  log_p = torch.log_softmax(logits, -1).numpy()
  nll = -np.take_along_axis(log_p, gold[None, ..., None], -1)[..., 0]
  expected = ((nll * weights).sum((1, 2)) / weights.sum()).mean()
  np.testing.assert_allclose(sums["loss_sum"] / sums["weight_sum"], expected,
                             rtol=1e-4)

  opt_config = optim.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                                     total_steps=100)
  opt = optim.make_optimizer(opt_config)
  step = jax.jit(train_step.make_train_step(
      config, opt, objective, seed=0,
      learning_rate=optim.learning_rate_schedule(opt_config)))
  state = train_step.init_train_state(config, opt, jax.random.key(0))
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss_sum"] / metrics["weight_sum"]))
  assert losses[-1] < losses[0] - 0.5
