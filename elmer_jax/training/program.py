"""The compiled-to-be pieces of a run: mesh, shardings, state init and step.

Apart from the loop (data, checkpoints, logs) so that what a step costs can
be built and timed on a host with jax, flax and optax alone: a GPU host's
image without TensorFlow or seqio runs bench/train_throughput.py this way.
"""

import contextlib
import dataclasses
from typing import Callable

import flax.linen as nn
import jax

from elmer_jax import partitioning
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training import optimizer as optim
from elmer_jax.training.train_step import (ObjectiveConfig, TrainState,
                                           init_train_state, make_train_step)


@dataclasses.dataclass(frozen=True)
class Program:
  """Trace and run these inside `context()`."""

  mesh: jax.sharding.Mesh
  rules: partitioning.Rules
  data_sharding: jax.sharding.NamedSharding
  shardings: TrainState
  abstract: TrainState  # ShapeDtypeStructs carrying the shardings.
  init: Callable[[], TrainState]  # A fresh, sharded state.
  step: Callable  # jitted (state, batch) -> (state, metrics); donates state.

  def context(self) -> contextlib.AbstractContextManager:
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(list(self.rules)))
    return stack


def build(model_config: ElmerConfig, *, batch_size: int,
          mesh: partitioning.MeshConfig = partitioning.MeshConfig(),
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          objective: ObjectiveConfig = ObjectiveConfig(),
          optimizer: optim.OptimizerConfig = optim.OptimizerConfig(),
          seed: int = 0) -> Program:
  """Mesh, shardings and the jitted train step (no data, no compilation
  yet); checks the mesh and the batch against the devices."""
  device_mesh = partitioning.make_mesh(mesh)
  partitioning.check_batch_size(batch_size, device_mesh, rules)
  data_sharding = partitioning.data_sharding(device_mesh, rules)
  transform = optim.make_optimizer(optimizer)
  step_fn = make_train_step(model_config, transform, objective, seed,
                            optim.learning_rate_schedule(optimizer))
  init = lambda: init_train_state(model_config, transform,
                                  jax.random.key(seed), boxed=True)
  boxed = jax.eval_shape(init)
  shardings = partitioning.state_shardings(boxed, device_mesh, rules)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(boxed), shardings)
  return Program(
      mesh=device_mesh, rules=rules, data_sharding=data_sharding,
      shardings=shardings, abstract=abstract,
      init=jax.jit(lambda: nn.unbox(init()), out_shardings=shardings),
      step=jax.jit(step_fn, in_shardings=(shardings, data_sharding),
                   out_shardings=(shardings, None), donate_argnums=0))
