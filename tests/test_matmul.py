"""16-bit products: fp32 accumulation, one rounding, and on CPU bf16 operands
all the way (no fp32 copy of a weight, which costs 3-7x at base)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmer_jax.model import matmul

ROWS, INNER, COLS = 6, 40, 24

PRODUCTS = {
    "dot_general": (lambda a, b: matmul.dot_general(
        a, b, (((1,), (0,)), ((), ()))), lambda a, b: a @ b, (INNER, COLS)),
    "dot": (matmul.dot, lambda a, b: a @ b, (INNER, COLS)),
    "dot_transposed": (matmul.dot_transposed, lambda a, b: a @ b.T,
                       (COLS, INNER)),
    "einsum": (lambda a, b: matmul.einsum("rk,kc->rc", a, b),
               lambda a, b: a @ b, (INNER, COLS)),
}


def _operands(rhs_shape, dtype):
  rng = np.random.default_rng(3)
  return (jnp.asarray(rng.normal(size=(ROWS, INNER)), dtype),
          jnp.asarray(rng.normal(size=rhs_shape), dtype))


def _product_and_exact(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
  """The product of random operands in `dtype`, and the exact (float64)
  product of the same operands."""
  product, reference, rhs_shape = PRODUCTS[name]
  a, b = _operands(rhs_shape, dtype)
  got = jax.jit(product)(a, b)
  assert got.dtype == dtype
  exact = reference(np.asarray(a, np.float64), np.asarray(b, np.float64))
  return np.asarray(got, np.float64), exact


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_bf16_product_is_the_exact_product_rounded_once(name):
  got, exact = _product_and_exact(name, jnp.bfloat16)
  # Within half a bf16 ulp of the exact product, plus fp32 summation error.
  ulp = 2.0 ** (np.floor(np.log2(np.abs(exact))) - 7)
  assert np.all(np.abs(got - exact)
                <= 0.5 * ulp + 1e-5 * np.abs(exact) + 1e-30)


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_fp32_product_is_plain_xla(name):
  got, exact = _product_and_exact(name, jnp.float32)
  np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_cpu_bf16_product_makes_no_fp32_copy_of_the_weight(name):
  product, _, rhs_shape = PRODUCTS[name]
  a, b = _operands(rhs_shape, jnp.bfloat16)
  hlo = jax.jit(product).lower(a, b).compile().as_text()
  weight_in_fp32 = f"f32[{rhs_shape[0]},{rhs_shape[1]}]"
  assert weight_in_fp32 not in hlo
