"""Exit-layer sampling and the LPLM loss against NumPy written from DESIGN.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmer_jax import objectives
from tests.helpers import sample_exit_layers

# Jitted, as training runs it (eager calls compile every op on its own).
_lplm_loss = jax.jit(objectives.lplm_loss, static_argnums=4,
                     static_argnames=("label_smoothing", "z_loss"))


def test_iid_exits_are_uniform_and_in_range():
  layers, n = 6, 120_000
  exits = np.asarray(sample_exit_layers(
      jax.random.key(0), (40, n // 40), layers, "iid"))
  assert exits.dtype == np.int32
  counts = np.bincount(exits.ravel(), minlength=layers)
  assert len(counts) == layers
  # Each count is Binomial(n, 1/6): sd ~ 129; allow 5 sd.
  assert np.all(np.abs(counts - n / layers) < 5 * np.sqrt(n * 5 / 36))


def test_permutation_uses_every_layer_equally_often_per_row():
  layers = 6
  exits = np.asarray(sample_exit_layers(
      jax.random.key(1), (64, 29), layers, "permutation"))
  for row in exits:
    counts = np.bincount(row, minlength=layers)
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == 29
  # Random order: every position sees every layer across rows, and rows differ.
  for position in range(29):
    assert len(np.unique(exits[:, position])) == layers
  assert len({tuple(r) for r in exits}) == len(exits)
  # The layers that get the extra token vary between rows.
  extra = {tuple(np.flatnonzero(np.bincount(r, minlength=layers) == 5))
           for r in exits}
  assert len(extra) > 5


def test_permutation_balances_each_packed_segment_apart_from_padding():
  layers = 4
  segments = np.array([[1] * 9 + [2] * 6 + [3] * 3 + [0] * 6] * 32, np.int32)
  exits = np.asarray(sample_exit_layers(
      jax.random.key(2), segments.shape, layers, "permutation",
      segment_ids=jnp.asarray(segments)))
  for row, seg in zip(exits, segments):
    for s in (1, 2, 3):
      counts = np.bincount(row[seg == s], minlength=layers)
      assert counts.max() - counts.min() <= 1, (s, counts)
  assert exits.min() >= 0 and exits.max() < layers


@pytest.mark.parametrize("method", objectives.EXIT_SAMPLING)
def test_sampling_is_a_function_of_the_key(method):
  a = sample_exit_layers(jax.random.key(7), (4, 16), 3, method)
  b = sample_exit_layers(jax.random.key(7), (4, 16), 3, method)
  c = sample_exit_layers(jax.random.key(8), (4, 16), 3, method)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_unknown_sampling_method_is_named():
  with pytest.raises(ValueError, match="'uniform'.*iid.*permutation"):
    objectives.sample_exit_layers(jax.random.key(0), (2, 3), 3, "uniform")


def _numpy_cross_entropy(logits, targets, smoothing, z_loss):
  """Cross-entropy against (1-s)*onehot + s/V, plus z * logsumexp**2."""
  logits = logits.astype(np.float64)
  shift = logits.max(-1, keepdims=True)
  log_z = np.log(np.exp(logits - shift).sum(-1)) + shift[..., 0]
  log_p = logits - log_z[..., None]
  vocab = logits.shape[-1]
  q = np.full(logits.shape, smoothing / vocab)
  np.put_along_axis(q, targets[..., None],
                    np.take_along_axis(q, targets[..., None], -1)
                    + (1 - smoothing), -1)
  nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  return -(q * log_p).sum(-1) + z_loss * log_z**2, nll


@pytest.mark.parametrize("smoothing,z_loss", [(0.0, 0.0), (0.1, 0.0),
                                              (0.0, 1e-3), (0.2, 1e-2)])
def test_lplm_loss_and_metrics_match_numpy(smoothing, z_loss):
  rng = np.random.default_rng(0)
  layers, vocab = 4, 11
  logits = rng.normal(size=(3, 7, vocab)).astype(np.float32) * 3
  targets = rng.integers(0, vocab, (3, 7))
  weights = np.ones((3, 7), np.float32)
  weights[1, 4:] = 0.0
  weights[2, 6:] = 0.0
  exits = rng.integers(0, layers - 1, (3, 7))  # Layer 3 stays unused.
  loss, sums = _lplm_loss(
      jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
      jnp.asarray(exits), layers, label_smoothing=smoothing, z_loss=z_loss)

  objective, nll = _numpy_cross_entropy(logits, targets, smoothing, z_loss)
  real = weights > 0
  np.testing.assert_allclose(loss, objective[real].mean(), rtol=1e-5)
  summary = objectives.summarize(sums)
  np.testing.assert_allclose(summary["cross_entropy"], nll[real].mean(),
                             rtol=1e-5)
  correct = logits.argmax(-1) == targets
  np.testing.assert_allclose(summary["accuracy"], correct[real].mean())
  np.testing.assert_allclose(summary["average_exit_layer"], exits[real].mean(),
                             rtol=1e-6)
  for layer in range(layers - 1):
    at = real & (exits == layer)
    np.testing.assert_allclose(summary[f"exit_layer_{layer}/cross_entropy"],
                               nll[at].mean(), rtol=1e-5)
    np.testing.assert_allclose(summary[f"exit_layer_{layer}/accuracy"],
                               correct[at].mean())
    np.testing.assert_allclose(summary[f"exit_layer_{layer}/fraction"],
                               at.sum() / real.sum())
  assert np.isnan(summary[f"exit_layer_{layers - 1}/cross_entropy"])
  assert summary[f"exit_layer_{layers - 1}/fraction"] == 0.0


def test_padding_does_not_affect_the_loss():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 9)).astype(np.float32)
  targets = rng.integers(0, 9, (2, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  exits = np.zeros((2, 5), np.int32)
  base, _ = _lplm_loss(logits, targets, weights, exits, 2)
  logits[0, 3:] = 100.0 * rng.normal(size=(2, 9))
  changed, _ = _lplm_loss(logits, targets, weights, exits, 2)
  assert float(base) == float(changed)


def test_metric_sums_add_across_microbatches():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(4, 6, 5)).astype(np.float32)
  targets = rng.integers(0, 5, (4, 6))
  weights = (rng.random((4, 6)) > 0.3).astype(np.float32)
  exits = rng.integers(0, 3, (4, 6))
  _, whole = _lplm_loss(logits, targets, weights, exits, 3)
  parts = [_lplm_loss(logits[i:i + 2], targets[i:i + 2], weights[i:i + 2],
                      exits[i:i + 2], 3)[1]
           for i in (0, 2)]
  added = jax.tree.map(lambda a, b: a + b, *parts)
  for key in whole:
    np.testing.assert_allclose(whole[key], added[key], rtol=1e-5)
