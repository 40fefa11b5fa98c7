"""Matrix products in a 16-bit compute dtype, accumulated in fp32 on CPU.

XLA:CPU runs a bf16 dot with a bf16 result by converting both operands to
fp32 first (a copy of every weight on every call, then an fp32 product),
while the same dot with an fp32 result runs on the CPU's bf16 units (AMX,
AVX512-BF16): 3-4x faster than fp32 at ELMER-base shapes. Asking for fp32
and rounding once gives what GPUs and TPUs compute for a bf16 dot (fp32
accumulation, one rounding), so there the products are left as they are.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp


def _wants_fp32_result(dtype: Any) -> bool:
  dtype = jnp.dtype(dtype)
  return (jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4
          and jax.default_backend() == "cpu")


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                precision: Any = None,
                preferred_element_type: Optional[Any] = None) -> jax.Array:
  """`jax.lax.dot_general` (the signature flax's `dot_general=` takes)."""
  out = jnp.result_type(lhs, rhs)
  if preferred_element_type is None and _wants_fp32_result(out):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                               preferred_element_type=jnp.float32).astype(out)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                             preferred_element_type=preferred_element_type)


def einsum(spec: str, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """`jnp.einsum` of two operands, its result in their dtype."""
  out = jnp.result_type(lhs, rhs)
  if _wants_fp32_result(out):
    return jnp.einsum(spec, lhs, rhs,
                      preferred_element_type=jnp.float32).astype(out)
  return jnp.einsum(spec, lhs, rhs)


def dot(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
  """`jnp.dot` of a (..., k) array and a (k, n) matrix."""
  return dot_general(lhs, rhs, (((lhs.ndim - 1,), (0,)), ((), ())))


def dot_transposed(lhs: jax.Array, rhs: jax.Array,
                   preferred_element_type: Optional[Any] = None) -> jax.Array:
  """lhs @ rhs.T for a (..., k) array and an (n, k) matrix (the tied head's
  table), spelled as one contraction: XLA:CPU runs `jnp.dot(lhs, rhs.T)` in
  bf16 through an fp32 copy of the transposed table, 7x slower at base."""
  return dot_general(lhs, rhs, (((lhs.ndim - 1,), (1,)), ((), ())),
                     preferred_element_type=preferred_element_type)
