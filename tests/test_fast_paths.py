"""Every speed setting against the plain path it replaces (fp32, 1e-5), and
the exited-token decoder against the PyTorch copy-on-exit reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from elmer_jax import lm_head_loss, objectives
from elmer_jax.export import param_map
from elmer_jax.model import Elmer
from elmer_jax.model.params import init_params
from elmer_jax.model.running_tokens import running_capacity
from elmer_jax.training import train_step
from tests import hf_reference
from tests.helpers import TINY, random_tokens, sample_exit_layers, variants

EXACT = TINY.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                     activation_dropout_rate=0.0)
LAYERS = TINY.decoder_layers


def _params():
  """Initial weights: every setting here shares TINY's layout, so one
  compiled init serves them all."""
  return init_params(TINY, jax.random.key(0))


def _batch(seed=0, batch=3, enc_len=11, dec_len=13, packed=False):
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, TINY, batch, enc_len)
  enc[1, 7:] = TINY.pad_id
  dec = random_tokens(rng, TINY, batch, dec_len)
  dec[2, 9:] = TINY.pad_id
  weights = (dec != TINY.pad_id).astype(np.float32)
  out = {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
         "decoder_target_tokens": random_tokens(rng, TINY, batch, dec_len),
         "decoder_loss_weights": weights}
  if packed:
    # Two segments per row, the second one shorter; trailing padding.
    seg = lambda n, cut: np.where(np.arange(n) < cut, 1, 2)[None].repeat(
        batch, 0).astype(np.int32)
    out["encoder_segment_ids"] = seg(enc_len, 6)
    out["decoder_segment_ids"] = seg(dec_len, 7)
    out["encoder_segment_ids"][:, -2:] = 0
    out["decoder_segment_ids"][:, -1:] = 0
  return {k: jnp.asarray(v) for k, v in out.items()}


@functools.partial(jax.jit, static_argnames=("config", "objective",
                                              "deterministic"))
def _grads(config, objective, params, batch, exits, deterministic=True):
  """Loss and gradients, one program per setting shared by the tests."""
  sums_fn = train_step.make_loss_sums(config, objective)
  loss = lambda p: sums_fn(p, batch, exits, jax.random.key(5),
                           deterministic)["loss_sum"]
  return jax.value_and_grad(loss)(params)


def _assert_trees_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol,
                                                       rtol=1e-5), a, b)


@pytest.mark.parametrize("label_smoothing,z_loss", [(0.0, 0.0), (0.1, 1e-3)])
@pytest.mark.parametrize("multiple", [1, 128])
def test_fused_head_loss_matches_plain_head_and_cross_entropy(
    label_smoothing, z_loss, multiple):
  rng = np.random.default_rng(1)
  states = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(96, 32)) * 0.5, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(96,)) * 0.1, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 96, (3, 7)), jnp.int32)
  weights = jnp.asarray(rng.random((3, 7)), jnp.float32)

  def plain(s, e, b):
    logits = s @ e.T + b
    obj, nll, z = objectives.cross_entropy(logits, targets, label_smoothing,
                                           z_loss)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return obj, nll, z, correct

  def fused(s, e, b):
    return lm_head_loss.head_cross_entropy(
        s, e, b, targets, vocab_multiple=multiple,
        label_smoothing=label_smoothing, z_loss=z_loss)

  for got, want in zip(fused(states, table, bias), plain(states, table, bias)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # All three outputs carry gradient (e.g. a metric differentiated on its own).
  scalar = lambda f: lambda *a: sum(jnp.sum(o * weights * (i + 1)) for i, o in
                                    enumerate(f(*a)[:3]))
  got = jax.jit(jax.grad(scalar(fused), argnums=(0, 1, 2)))(states, table, bias)
  want = jax.jit(jax.grad(scalar(plain), argnums=(0, 1, 2)))(states, table,
                                                            bias)
  _assert_trees_close(got, want, 1e-5)


def test_fused_head_loss_in_bf16_runs_and_matches_the_fp32_head():
  """The bf16 path compiles on every backend (XLA:CPU has no kernel for
  some bf16 x bf16 -> fp32 dot forms) and stays near the fp32 head: states
  and table rounded to bf16 (2^-9 relative each) move a logit of ~32 terms
  of |h w| ~ 0.4 by up to ~0.05, the 21-token loss sum by ~0.1, and each
  gradient entry by ~1% of the largest."""
  rng = np.random.default_rng(1)
  states = jnp.asarray(rng.normal(size=(3, 7, 32)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(96, 32)) * 0.5, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(96,)) * 0.1, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 96, (3, 7)), jnp.int32)
  plain = lambda s, e, b: jnp.sum(objectives.cross_entropy(s @ e.T + b,
                                                           targets)[0])
  fused = lambda s, e, b: jnp.sum(lm_head_loss.head_cross_entropy(
      s, e, b, targets, dtype=jnp.bfloat16)[0])
  want, got = (jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(
      states, table, bias) for f in (plain, fused))
  np.testing.assert_allclose(got[0], want[0], atol=0.15)
  for g, w in zip(got[1], want[1]):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, atol=0.02 * float(jnp.max(jnp.abs(w))))


def test_fused_head_counts_a_target_tied_at_the_maximum_as_correct():
  """argmax would pick the tie's first token; the fused head only asks
  whether the target's logit is the largest (no extra vocabulary pass)."""
  states = jnp.ones((1, 3, 1), jnp.float32)
  table = jnp.zeros((6, 1), jnp.float32)
  bias = jnp.asarray([0.0, 2.0, 0.0, 2.0, 1.0, 0.0], jnp.float32)
  targets = jnp.asarray([[3, 1, 4]], jnp.int32)  # tied, tied-first, below
  *_, correct = lm_head_loss.head_cross_entropy(states, table, bias, targets)
  np.testing.assert_array_equal(correct, [[1.0, 1.0, 0.0]])


def test_fused_head_loss_refuses_misshaped_targets():
  with pytest.raises(ValueError, match="targets have shape"):
    lm_head_loss.head_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((5, 4)),
                                    jnp.zeros(5), jnp.zeros((2, 4), jnp.int32))


XLA, FUSED = dict(attention_impl="xla"), dict(fused_qkv=True)


@pytest.mark.parametrize("packed,change", variants(
    (True, XLA | FUSED), (False, XLA), (True, XLA), (False, FUSED),
    (True, FUSED), (False, XLA | FUSED)))
def test_attention_settings_match_plain_attention(packed, change):
  params = _params()
  batch = _batch(packed=packed)
  exits = objectives.sample_exit_layers(jax.random.key(2), (3, 13), LAYERS)
  objective = train_step.ObjectiveConfig()
  want = _grads(EXACT, objective, params, batch, exits)
  got = _grads(EXACT.replace(**change), objective, params, batch, exits)
  _assert_trees_close(got, want, 1e-5)


def test_dot_product_attention_refuses_attention_dropout_in_training():
  config = TINY.replace(attention_impl="xla")
  params = _params()
  exits = jnp.zeros((3, 13), jnp.int32)
  with pytest.raises(ValueError, match="attention_dropout_rate"):
    _grads(config, train_step.ObjectiveConfig(), params, _batch(), exits,
           deterministic=False)


def test_running_capacity_bounds_permutation_exits():
  for length in (5, 13, 40, 128):
    capacity = running_capacity(length, 6)
    assert capacity[0] == length and capacity[-1] < length
    for seed in range(20):
      rng = np.random.default_rng(seed)
      weights = rng.random((4, length)) < rng.random()
      exits = sample_exit_layers(jax.random.key(seed), (4, length), 6,
                                 "permutation", jnp.asarray(weights, jnp.int32))
      running = (np.asarray(exits)[..., None] >= np.arange(6)).sum(1)
      assert (running <= np.asarray(capacity)).all()
  assert sum(running_capacity(128, 6)) < 0.62 * 6 * 128


@pytest.mark.parametrize("fused_loss", variants(True, False))
def test_skipping_exited_tokens_gives_the_dense_loss_and_gradients(fused_loss):
  params = _params()
  batch = _batch()
  dense = train_step.ObjectiveConfig(exit_sampling="permutation")
  skip = train_step.ObjectiveConfig(exit_sampling="permutation",
                                    skip_exited_tokens=True,
                                    fused_loss=fused_loss)
  exits = train_step.draw_exit_layers(jax.random.key(3), batch, LAYERS,
                                      "permutation")
  want_loss, want = _grads(EXACT, dense, params, batch, exits)
  got_loss, got = _grads(EXACT.replace(fused_qkv=True), skip, params, batch,
                         exits)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  _assert_trees_close(got, want, 1e-5)


@pytest.mark.integration  # Dense = torch: test_copy_on_exit; skip = dense.
def test_skipping_exited_tokens_matches_the_torch_reference():
  config = EXACT
  hf = hf_reference.random_bart(config, seed=4)
  params = param_map.from_hf(hf_reference.state_dict_numpy(hf), config)
  batch = _batch(seed=4)
  exits = train_step.draw_exit_layers(jax.random.key(4), batch, LAYERS,
                                      "permutation")
  model = Elmer(config, running_capacity=running_capacity(13, LAYERS))
  logits = lambda p: model.apply({"params": p}, batch["encoder_input_tokens"],
                                 batch["decoder_input_tokens"], exits).logits
  weights = np.asarray(batch["decoder_loss_weights"])
  targets = np.asarray(batch["decoder_target_tokens"])
  loss = lambda p: objectives.lplm_loss(logits(p), targets, weights, exits,
                                        LAYERS)[0]
  got_loss, got_grads = jax.jit(jax.value_and_grad(loss))(params)

  ref_logits, _ = hf_reference.torch_elmer_decoder(
      hf, np.asarray(batch["encoder_input_tokens"]),
      np.asarray(batch["decoder_input_tokens"]), np.asarray(exits),
      config.pad_id)
  nll = torch.nn.functional.cross_entropy(
      ref_logits.reshape(-1, config.vocab_size),
      torch.as_tensor(targets.reshape(-1), dtype=torch.long),
      reduction="none")
  w = torch.as_tensor(weights.reshape(-1))
  ref_loss = (nll * w).sum() / w.sum()
  ref_loss.backward()
  np.testing.assert_allclose(got_loss, ref_loss.item(), rtol=1e-5)
  ref = dict(hf.named_parameters())
  for name in ("model.decoder.layers.2.fc1.weight",
               "model.decoder.layers.0.self_attn.q_proj.weight",
               "model.encoder.layers.1.self_attn.k_proj.weight"):
    parts = name.split(".")
    side, layer, block, proj = parts[1], parts[3], parts[4], parts[5]
    sub = got_grads[side][f"layers_{layer}"]
    if block == "fc1":
      kernel = sub["ffn"]["fc1"]["kernel"]
    else:
      kernel = sub[block][proj]["kernel"].reshape(config.d_model, -1)
    np.testing.assert_allclose(kernel.T, ref[name].grad.numpy(), atol=1e-5)


def test_skipping_exited_tokens_refuses_what_it_cannot_bound():
  with pytest.raises(ValueError, match="exit_sampling='permutation'"):
    train_step.ObjectiveConfig(skip_exited_tokens=True)
  # The settings of test_skipping_exited_tokens_gives_the_dense_loss...[True]
  # (its compiled program serves here).
  skip = train_step.ObjectiveConfig(exit_sampling="permutation",
                                    skip_exited_tokens=True, fused_loss=True)
  config = EXACT.replace(fused_qkv=True)
  params = _params()
  exits = jnp.zeros((3, 13), jnp.int32)
  with pytest.raises(ValueError, match="unpacked"):
    _grads(config, skip, params, _batch(packed=True), exits)
  # Exits that do not come from permutation sampling poison the loss.
  loss, _ = _grads(config, skip, params, _batch(),
                   jnp.full((3, 13), LAYERS - 1, jnp.int32))
  assert np.isnan(loss)


def _steps(objective, config=TINY, steps=3):
  opt = optax.sgd(1e-3)  # The settings are the model's; SGD compiles fastest.
  step = jax.jit(train_step.make_train_step(config, opt, objective, seed=7,
                                            learning_rate=lambda s: 1e-3))
  state = train_step.init_train_state(config, opt, jax.random.key(0))
  states = []
  for _ in range(steps):
    state, metrics = step(state, _batch())
    states.append((state, metrics))
  return step, states


@pytest.mark.integration  # Two full train steps.
def test_rbg_dropout_is_step_indexed_and_differs_from_threefry():
  rbg = train_step.ObjectiveConfig(dropout_prng="rbg")
  step, states = _steps(rbg)
  # Resuming from step 1's state reproduces step 2 bit for bit.
  again, metrics = step(states[0][0], _batch())
  np.testing.assert_array_equal(metrics["loss_sum"], states[1][1]["loss_sum"])
  jax.tree.map(np.testing.assert_array_equal, again.params,
               states[1][0].params)
  _, threefry = _steps(train_step.ObjectiveConfig(), steps=1)
  assert float(threefry[0][1]["loss_sum"]) != float(states[0][1]["loss_sum"])
  with pytest.raises(ValueError, match="dropout_prng"):
    train_step.ObjectiveConfig(dropout_prng="philox")


@pytest.mark.integration  # Each setting is checked alone above.
def test_all_fast_settings_train_like_the_plain_step():
  fast = train_step.ObjectiveConfig(exit_sampling="permutation",
                                    fused_loss=True, skip_exited_tokens=True)
  plain = train_step.ObjectiveConfig(exit_sampling="permutation")
  _, got = _steps(fast, EXACT.replace(fused_qkv=True, attention_impl="xla"))
  _, want = _steps(plain, EXACT)
  for (g_state, g_metrics), (w_state, w_metrics) in zip(got, want):
    np.testing.assert_allclose(g_metrics["loss_sum"], w_metrics["loss_sum"],
                               rtol=1e-5)
  _assert_trees_close(got[-1][0].params, want[-1][0].params, 1e-5)
