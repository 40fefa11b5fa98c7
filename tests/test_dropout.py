"""16-bit dropout masks: the bits they come from, their rate and scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmer_jax.model import dropout


def _numpy_mask(key, shape, rate):
  """The documented semantics: element 2i / 2i + 1 of the last axis keeps
  the low / high 16 bits of word i, kept when below round((1-rate) * 2^16)."""
  *lead, last = shape
  words = np.asarray(jax.random.bits(key, (*lead, (last + 1) // 2),
                                     jnp.uint32))
  halves = np.empty((*lead, 2 * words.shape[-1]), np.uint32)
  halves[..., 0::2] = words & 0xFFFF
  halves[..., 1::2] = words >> 16
  return halves[..., :last] < round((1 - rate) * 65536)


@pytest.mark.parametrize("shape", [(4, 6), (3, 2, 7), (5,)])
def test_mask_is_the_documented_split_of_random_words(shape):
  key = jax.random.key(3)
  np.testing.assert_array_equal(dropout.keep_mask(key, shape, 0.3),
                                _numpy_mask(key, shape, 0.3))


def test_keep_rate_and_expectation():
  x = jnp.ones((64, 1000))
  out = dropout.Dropout(0.1).apply({}, x, False,
                                   rngs={"dropout": jax.random.key(0)})
  kept = np.asarray(out) > 0
  # 64,000 Bernoulli(0.9) draws: the share is within 5 standard errors.
  assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.9 * 0.1 / kept.size)
  # Kept elements are scaled by 1 / the rounded keep probability.
  np.testing.assert_allclose(np.asarray(out)[kept], 65536 / 58982, rtol=1e-6)
  # Neighbouring elements (two halves of one word) are not correlated.
  pairs = kept[:, 0::2].ravel(), kept[:, 1::2].ravel()
  assert abs(np.corrcoef(*pairs)[0, 1]) < 0.03


def test_deterministic_zero_and_full_rates():
  x = jnp.arange(12.0).reshape(3, 4)
  rngs = {"dropout": jax.random.key(1)}
  assert dropout.Dropout(0.5).apply({}, x, True) is x
  np.testing.assert_array_equal(
      dropout.Dropout(0.0).apply({}, x, False, rngs=rngs), x)
  np.testing.assert_array_equal(
      dropout.Dropout(1.0).apply({}, x, False, rngs=rngs), np.zeros((3, 4)))


def test_different_keys_draw_different_masks():
  shape = (8, 128)
  a = dropout.keep_mask(jax.random.key(0), shape, 0.1)
  b = dropout.keep_mask(jax.random.key(1), shape, 0.1)
  assert np.any(np.asarray(a) != np.asarray(b))
