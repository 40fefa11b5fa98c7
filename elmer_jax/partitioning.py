"""Meshes and logical-axis rules: how ELMER is laid out over devices.

The model names every parameter axis and key activation axis (`batch`,
`length`, `embed`, `heads`, `kv`, `mlp`, `vocab`, `layers`); rules, plain data
that gin may replace, map those names to the mesh axes `(data, fsdp, tensor)`.
"""

import dataclasses
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np


MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Optional[str | tuple[str, ...]]]]

# Data parallel over `data` and `fsdp`; parameters sharded over `fsdp` on
# their embedding axis (ZeRO-3 style) and over `tensor` on heads, FFN and
# vocabulary (Megatron style).
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """(data, fsdp, tensor) sizes within a slice (`ici`) and across slices
  (`dcn`, multi-slice / multi-host over the data-center network). One -1 in
  `ici` takes whatever the device count leaves."""

  ici: tuple[int, int, int] = (-1, 1, 1)
  dcn: tuple[int, int, int] = (1, 1, 1)


def _resolve(shape: Sequence[int], devices: int, name: str) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"{name}={shape} must give one size per mesh axis "
                     f"{MESH_AXES}.")
  fills = shape.count(-1)
  known = math.prod(s for s in shape if s != -1)
  if fills > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"{name}={shape}: sizes must be positive, with at most "
                     "one -1.")
  if fills:
    if devices % known:
      raise ValueError(
          f"{name}={shape} cannot fill {devices} devices: {known} does not "
          f"divide {devices}.")
    shape = tuple(devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != devices:
    raise ValueError(
        f"{name}={shape} has {math.prod(shape)} devices but there are "
        f"{devices}; for example {(devices, 1, 1)} fits.")
  return shape


def make_mesh(config: MeshConfig = MeshConfig(),
              devices: Optional[Sequence[jax.Device]] = None
              ) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types (so flax's logical
  constraints constrain rather than assert)."""
  devices = list(devices if devices is not None else jax.devices())
  dcn = _resolve(config.dcn, math.prod(config.dcn) if -1 not in config.dcn
                 else len(devices), "MeshConfig.dcn")
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ValueError(f"MeshConfig.dcn={config.dcn} asks for {slices} slices "
                     f"but {len(devices)} devices do not split into them.")
  ici = _resolve(config.ici, len(devices) // slices, "MeshConfig.ici")
  # TPU slices, else hosts (processes), are the granules of the dcn axes;
  # devices of one slice (CPU and GPU hosts) may still carry a slice_index.
  by_slice = len({getattr(d, "slice_index", 0) for d in devices}) > 1
  if slices > 1 and (by_slice or jax.process_count() > 1):
    grid = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices, process_is_granule=not by_slice,
        allow_split_physical_axes=True)
  elif slices > 1:
    # One process (tests, fake devices): consecutive blocks act as slices.
    blocks = np.asarray(devices).reshape(dcn + ici)
    grid = blocks.transpose(0, 3, 1, 4, 2, 5).reshape(
        [d * i for d, i in zip(dcn, ici)])
  else:
    grid = mesh_utils.create_device_mesh(ici, devices,
                                         allow_split_physical_axes=True)
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.sharding.Mesh(np.asarray(grid), MESH_AXES, axis_types=auto)


def state_shardings(boxed_tree, mesh: jax.sharding.Mesh,
                    rules: Rules = DEFAULT_RULES):
  """Shardings for a tree whose leaves may be `nn.LogicallyPartitioned`
  (parameters, and optimizer slots shaped like them); other leaves, and
  factored slots whose rank differs from their names, are replicated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def sharding(leaf):
    if (isinstance(leaf, nn.LogicallyPartitioned)
        and len(leaf.names) == len(leaf.value.shape)):
      spec = nn.logical_to_mesh_axes(leaf.names, list(rules))
      return jax.sharding.NamedSharding(mesh, spec)
    return replicated

  return jax.tree.map(sharding, boxed_tree,
                      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def data_sharding(mesh: jax.sharding.Mesh,
                  rules: Rules = DEFAULT_RULES) -> jax.sharding.NamedSharding:
  """How (batch, length) input arrays are split."""
  spec = nn.logical_to_mesh_axes(("batch", "length"), list(rules))
  return jax.sharding.NamedSharding(mesh, spec)


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh,
                     rules: Rules = DEFAULT_RULES) -> None:
  """Raises unless the batch splits evenly over the axes `batch` maps to."""
  spec = data_sharding(mesh, rules).spec
  axes = spec[0] if spec else None
  axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
  ways = math.prod(mesh.shape[a] for a in axes)
  if global_batch_size % ways:
    raise ValueError(
        f"Global batch size {global_batch_size} does not split over the "
        f"{ways}-way batch axes {axes} of mesh {dict(mesh.shape)}; use a "
        f"multiple of {ways}.")
