"""Meshes on 8 fake CPU devices, and parameters laid out as the rules say."""

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from elmer_jax import partitioning
from elmer_jax.model import Elmer
from elmer_jax.model.params import abstract_params, init_params
from tests.helpers import TINY, compiled_apply, random_tokens


def test_eight_devices_are_available():
  assert jax.device_count() == 8


@pytest.mark.parametrize("ici,shape", [((2, 2, 2), (2, 2, 2)),
                                       ((-1, 1, 2), (4, 1, 2)),
                                       ((1, -1, 1), (1, 8, 1))])
def test_mesh_shapes(ici, shape):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=ici))
  assert tuple(mesh.shape[a] for a in partitioning.MESH_AXES) == shape
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_hybrid_mesh_puts_slices_on_the_data_axis():
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=(1, 2, 2),
                                                        dcn=(2, 1, 1)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  # Each data-parallel half is one "slice": devices 0-3, then 4-7.
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  assert set(ids[0].ravel()) == {0, 1, 2, 3}
  assert set(ids[1].ravel()) == {4, 5, 6, 7}


@pytest.mark.parametrize("ici,pattern", [
    ((3, 1, 1), r"MeshConfig.ici=\(3, 1, 1\) has 3 devices but there are 8"),
    ((3, -1, 1), r"cannot fill 8 devices: 3 does not divide 8"),
    ((-1, -1, 1), r"at most one -1"),
    ((2, 2), r"one size per mesh axis"),
])
def test_wrong_mesh_sizes_name_the_value(ici, pattern):
  with pytest.raises(ValueError, match=pattern):
    partitioning.make_mesh(partitioning.MeshConfig(ici=ici))


def test_parameters_are_sharded_as_the_rules_say():
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=(2, 2, 2)))
  shardings = partitioning.state_shardings(abstract_params(TINY), mesh)
  params = jax.device_put(init_params(TINY, jax.random.key(0)), shardings)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  expected = {
      "shared/embedding": P("tensor", "fsdp"),
      "encoder/layers_0/self_attn/q_proj/kernel": P("fsdp", "tensor", None),
      "decoder/layers_1/encoder_attn/out_proj/kernel": P("tensor", None,
                                                         "fsdp"),
      "decoder/layers_2/ffn/fc1/kernel": P("fsdp", "tensor"),
      "decoder/layers_2/ffn/fc2/bias": P("fsdp"),
      "final_logits_bias": P("tensor"),
      "encoder/embed_positions/embedding": P(None, "fsdp"),
  }
  for path, spec in expected.items():
    assert flat[path].sharding.spec == spec, path
  q = flat["encoder/layers_0/self_attn/q_proj/kernel"]
  assert q.addressable_shards[0].data.shape == (TINY.d_model // 2,
                                                TINY.num_heads // 2,
                                                TINY.head_dim)


def test_sharded_forward_equals_single_device():
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=(2, 2, 2)))
  params = init_params(TINY, jax.random.key(1))
  rng = np.random.default_rng(0)
  enc, dec = random_tokens(rng, TINY, 4, 12), random_tokens(rng, TINY, 4, 8)
  expected = compiled_apply(TINY)({"params": params}, enc, dec).logits

  sharded = jax.device_put(
      params, partitioning.state_shardings(abstract_params(TINY), mesh))
  data = partitioning.data_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(
      list(partitioning.DEFAULT_RULES)):
    logits = jax.jit(lambda p, e, d: Elmer(TINY).apply({"params": p}, e, d)
                     .logits)(sharded, jax.device_put(enc, data),
                              jax.device_put(dec, data))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected),
                             atol=1e-5)
  assert logits.sharding.spec[0] == ("data", "fsdp")


def test_batch_must_split_over_the_batch_axes():
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=(2, 2, 2)))
  partitioning.check_batch_size(8, mesh)
  with pytest.raises(ValueError, match=r"batch size 6 .* 4-way .* multiple of 4"):
    partitioning.check_batch_size(6, mesh)
