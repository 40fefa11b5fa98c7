"""Scan, remat, compute dtype and dropout change how, not what, is computed."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmer_jax.export import param_map
from elmer_jax.model import Elmer
from elmer_jax.model import params as model_params
from elmer_jax.model.params import init_params
from elmer_jax.objectives import lplm_loss
from tests.helpers import TINY, compiled_apply, random_tokens, variants


def _batch():
  rng = np.random.default_rng(0)
  enc = random_tokens(rng, TINY, 2, 9)
  dec = random_tokens(rng, TINY, 2, 7)
  exits = rng.integers(0, TINY.decoder_layers, dec.shape).astype(np.int32)
  return enc, dec, exits


def _loss_and_grads(config, params, enc, dec, exits):
  def loss(p):
    out = Elmer(config).apply({"params": p}, enc, dec, exits)
    return lplm_loss(out.logits, dec, np.ones(dec.shape), exits,
                     config.decoder_layers)[0]
  return jax.jit(jax.value_and_grad(loss))(params)


def _flat(tree):
  return {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(tree, sep="/").items()}


@pytest.mark.parametrize("scan,remat", variants(
    (True, "dots"), (False, "full"), (True, "none"),
    (True, "dots_with_no_batch_dims")))
def test_scan_and_remat_give_the_same_loss_and_gradients(scan, remat):
  enc, dec, exits = _batch()
  params = init_params(TINY, jax.random.key(1))
  loss, grads = _loss_and_grads(TINY, params, enc, dec, exits)

  config = TINY.replace(scan_layers=scan, remat_policy=remat)
  flat = _flat(params)
  other = param_map.stack_layers(flat) if scan else flat
  other_loss, other_grads = _loss_and_grads(
      config, flax.traverse_util.unflatten_dict(other, sep="/"), enc, dec,
      exits)
  np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
  other_grads = _flat(other_grads)
  if scan:
    other_grads = param_map.unstack_layers(other_grads)
  for key, grad in _flat(grads).items():
    np.testing.assert_allclose(other_grads[key], grad, atol=1e-6, rtol=1e-5,
                               err_msg=key)


def test_bfloat16_compute_keeps_fp32_params_and_close_logits():
  enc, dec, exits = _batch()
  params = init_params(TINY, jax.random.key(2))
  fp32 = compiled_apply(TINY)({"params": params}, enc, dec, exits).logits
  config = TINY.replace(dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(
      model_params.abstract_params(config)))
  bf16 = compiled_apply(config)({"params": params}, enc, dec, exits).logits
  assert bf16.dtype == jnp.float32
  assert 0 < np.abs(np.asarray(bf16 - fp32)).max() < 0.1


def test_dropout_only_when_not_deterministic():
  enc, dec, exits = _batch()
  params = init_params(TINY, jax.random.key(3))
  model = Elmer(TINY)
  apply = jax.jit(lambda det, p, seed: model.apply(
      {"params": p}, enc, dec, exits, deterministic=det,
      rngs={"dropout": jax.random.key(seed)}).logits, static_argnums=0)
  run = lambda det, seed: apply(det, params, seed)
  np.testing.assert_array_equal(run(True, 0), run(True, 1))
  assert not np.allclose(run(False, 0), run(False, 1))
  np.testing.assert_array_equal(run(False, 4), run(False, 4))


def test_packed_rows_equal_separate_rows():
  """Two examples packed into one row (segment ids, positions) give the same
  logits as each run alone: attention stays inside its segment both ways."""
  rng = np.random.default_rng(4)
  params = init_params(TINY, jax.random.key(4))
  model = compiled_apply(TINY)
  enc_a, enc_b = random_tokens(rng, TINY, 1, 6), random_tokens(rng, TINY, 1, 4)
  dec_a, dec_b = random_tokens(rng, TINY, 1, 5), random_tokens(rng, TINY, 1, 3)
  exit_a = rng.integers(0, TINY.decoder_layers, (1, 5)).astype(np.int32)
  exit_b = rng.integers(0, TINY.decoder_layers, (1, 3)).astype(np.int32)
  alone_a = model({"params": params}, enc_a, dec_a, exit_a).logits[0]
  alone_b = model({"params": params}, enc_b, dec_b, exit_b).logits[0]

  pad = lambda x, n: np.pad(x, ((0, 0), (0, n)),
                            constant_values=TINY.pad_id)
  enc = pad(np.concatenate([enc_a, enc_b], 1), 2)
  dec = pad(np.concatenate([dec_a, dec_b], 1), 2)
  exits = np.concatenate([exit_a, exit_b, np.zeros((1, 2), np.int32)], 1)
  segments = lambda a, b, n: np.array([[1] * a + [2] * b + [0] * n], np.int32)
  positions = lambda a, b, n: np.array(
      [list(range(a)) + list(range(b)) + [0] * n], np.int32)
  packed = model({"params": params}, enc, dec, exits,
                 encoder_segment_ids=segments(6, 4, 2),
                 decoder_segment_ids=segments(5, 3, 2),
                 encoder_positions=positions(6, 4, 2),
                 decoder_positions=positions(5, 3, 2)).logits[0]
  np.testing.assert_allclose(packed[:5], alone_a, atol=1e-5)
  np.testing.assert_allclose(packed[5:8], alone_b, atol=1e-5)
