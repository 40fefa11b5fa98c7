"""Creating ELMER parameters: real ones, abstract ones, and their logical axes."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.elmer import Elmer

_INIT_LENGTH = 2  # Parameter shapes do not depend on the sequence length.


# One compiled program, not one per initialiser and layer op (eager init
# compiles hundreds of small ones).
@functools.partial(jax.jit, static_argnums=0)
def _init(config: ElmerConfig, rng: jax.Array):
  tokens = jnp.zeros((1, _INIT_LENGTH), jnp.int32)
  return Elmer(config).init({"params": rng}, tokens, tokens)["params"]


def init_params(config: ElmerConfig, rng: jax.Array,
                boxed: bool = False) -> dict:
  """Randomly initialised parameters (BART's init); with `boxed`, each is an
  `nn.LogicallyPartitioned` carrying its logical axis names."""
  params = _init(config, rng)
  return params if boxed else nn.unbox(params)


def abstract_params(config: ElmerConfig) -> dict:
  """Parameter shapes and dtypes (`ShapeDtypeStruct`), boxed with their
  logical axis names (`nn.LogicallyPartitioned`); allocates nothing."""
  return jax.eval_shape(lambda: _init(config, jax.random.key(0)))


def logical_axes(config: ElmerConfig) -> dict:
  """The logical axis names of every parameter (a PartitionSpec per leaf)."""
  return nn.get_partition_spec(abstract_params(config))


def flat_shapes(config: ElmerConfig) -> dict[str, tuple[int, ...]]:
  """'path/to/param' → shape, in the layout `config` selects."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(abstract_params(config)),
                                         sep="/")
  return {path: tuple(x.shape) for path, x in flat.items()}


def count_params(config: ElmerConfig) -> int:
  """Parameters counted as BART counts them: without `final_logits_bias`."""
  return sum(
      int(jnp.prod(jnp.array(shape))) for path, shape in
      flat_shapes(config).items() if path != "final_logits_bias")
