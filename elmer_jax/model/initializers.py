"""Parameter initializers that carry logical axis names (BART's init scheme)."""

from typing import Sequence

import flax.linen as nn
import jax

Axes = Sequence[str]


def normal(std: float, axes: Axes) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(jax.nn.initializers.normal(std), axes)


def zeros(axes: Axes) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(jax.nn.initializers.zeros, axes)


def ones(axes: Axes) -> nn.initializers.Initializer:
  return nn.with_logical_partitioning(jax.nn.initializers.ones, axes)
