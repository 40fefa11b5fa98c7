"""Applies a row-wise function to blocks of rows, so that what one block
materialises stays small (a core's cache on CPU, bounded memory anywhere)."""

from typing import Callable

import jax
import jax.numpy as jnp


def map_row_blocks(fn: Callable[..., tuple[jax.Array, ...]], block_rows: int,
                   *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """fn(*arrays) for arrays sharing a leading axis of rows, computed on at
  most `block_rows` rows at a time (the last block padded with zeros, whose
  results are dropped); `fn` returns a tuple of arrays with that axis."""
  rows = arrays[0].shape[0]
  block_rows = max(1, block_rows)
  if rows <= block_rows:
    return fn(*arrays)
  blocks = -(-rows // block_rows)
  padded = [jnp.pad(x, [(0, blocks * block_rows - rows)] + [(0, 0)] *
                    (x.ndim - 1)).reshape((blocks, block_rows) + x.shape[1:])
            for x in arrays]
  out = jax.lax.map(lambda xs: fn(*xs), padded)
  return tuple(y.reshape((blocks * block_rows,) + y.shape[2:])[:rows]
               for y in out)
