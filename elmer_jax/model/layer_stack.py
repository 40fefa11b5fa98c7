"""Runs a stack of identical layers as a Python loop or an `nn.scan`.

Per-layer parameters live under `layers_0 .. layers_{L-1}`; scanned ones under
`layers` with a leading `layers` axis. The exporter converts between the two.
"""

from typing import Any, Sequence, Type

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.off_ramp import GOLD_MIX_RNG

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims":
        jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def remat(layer: Type[nn.Module], config: ElmerConfig) -> Type[nn.Module]:
  """`layer` under `ElmerConfig.remat_policy` (itself for `none`)."""
  if config.remat_policy == "none":
    return layer
  return nn.remat(layer, policy=_REMAT_POLICIES[config.remat_policy],
                  prevent_cse=not config.scan_layers)


def run_layers(layer: Type[nn.Module], config: ElmerConfig, num_layers: int,
               deterministic: bool, carry: Any, broadcast: Sequence[Any],
               name: str = "layers", **layer_kwargs) -> tuple[Any, Any]:
  """Applies `num_layers` layers; each is called as layer(carry, index, *broadcast).

  Layers return (carry, output); outputs come back stacked on a leading axis.
  Must be called from a compact method (the layers become its children).
  """
  layer = remat(layer, config)
  indices = jnp.arange(num_layers, dtype=jnp.int32)
  if config.scan_layers:
    scanned = nn.scan(
        layer, variable_axes={"params": 0, "perturbations": 0},
        split_rngs={"params": True, "dropout": True, GOLD_MIX_RNG: True},
        in_axes=(0,) + (nn.broadcast,) * len(broadcast), length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(config, deterministic=deterministic, name=name,
                   **layer_kwargs)(carry, indices, *broadcast)
  outputs = []
  for i in range(num_layers):
    carry, out = layer(config, deterministic=deterministic,
                       name=f"{name}_{i}", **layer_kwargs)(
                           carry, indices[i], *broadcast)
    outputs.append(out)
  return carry, jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)
