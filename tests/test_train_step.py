"""The train step on real sample batches: learns, microbatches exactly,
is step-indexed, and runs sharded on a (data, fsdp, tensor) mesh."""

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax import gin_utils, objectives, partitioning
from elmer_jax.data import pipeline
from elmer_jax.model import params as model_params
from elmer_jax.training import optimizer as optim
from elmer_jax.training import train_step

LENGTHS = {"inputs": 48, "targets": 48}


@pytest.fixture(scope="module")
def config():
  gin_utils.parse(["models/tiny.gin"], ["config.ElmerConfig.vocab_size = 8000",
                                        "config.ElmerConfig.pad_id = 0",
                                        "config.ElmerConfig.eos_id = 1",
                                        "config.ElmerConfig.unk_id = 2",
                                        "config.ElmerConfig.bos_id = 3",
                                        "config.ElmerConfig.mask_id = 4"])
  return gin_utils.macro("MODEL_CONFIG")


@pytest.fixture(scope="module")
def batches():
  shard = seqio.ShardInfo(0, 1)
  iterator = pipeline.ResumableIterator({shard: pipeline.get_dataset(
      "sample_wiki_elmer", LENGTHS, "train", 8,
      pipeline.converter_for("sample_wiki_elmer"), seed=0, shard=shard)})
  return [next(iterator) for _ in range(40)]


def _setup(config, microbatches=1, lr=3e-3):
  opt_config = optim.OptimizerConfig(learning_rate=lr, warmup_steps=5,
                                     total_steps=1000)
  opt = optim.make_optimizer(opt_config)
  step = train_step.make_train_step(
      config, opt, train_step.ObjectiveConfig(microbatches=microbatches),
      seed=0, learning_rate=optim.learning_rate_schedule(opt_config))
  return train_step.init_train_state(config, opt, jax.random.key(0)), step


def _loss(metrics):
  return float(metrics["loss_sum"] / metrics["weight_sum"])


@pytest.mark.integration  # 40 training steps: a short learning run.
def test_loss_falls_on_real_text(config, batches):
  state, step = _setup(config)
  step = jax.jit(step)
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(_loss(metrics))
  assert int(state.step) == len(batches)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
  summary = objectives.summarize(metrics)
  assert 0 <= summary["average_exit_layer"] <= config.decoder_layers - 1


@pytest.mark.integration  # Two full train steps.
def test_microbatches_give_the_same_update(config, batches):
  no_dropout = config.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                              activation_dropout_rate=0.0)
  whole_state, whole = _setup(no_dropout, microbatches=1)
  split_state, split = _setup(no_dropout, microbatches=4)
  whole_state, whole_metrics = jax.jit(whole)(whole_state, batches[0])
  split_state, split_metrics = jax.jit(split)(split_state, batches[0])
  np.testing.assert_allclose(_loss(split_metrics), _loss(whole_metrics),
                             rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               split_state.params, whole_state.params)


def test_steps_are_indexed_by_step_number(config, batches):
  state, step = _setup(config)
  step = jax.jit(step)
  first, m1 = step(state, batches[0])
  again, m2 = step(state, batches[0])
  assert _loss(m1) == _loss(m2)
  _, m3 = step(first, batches[0])  # Step 1: other exits and dropout.
  assert _loss(m3) != _loss(m1)


@pytest.mark.integration  # 8 devices, 3 meshes; one sharded forward: test_partitioning.
def test_sharded_steps_keep_the_layout_and_match_one_device(config, batches):
  mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=(2, 2, 2)))
  state, step = _setup(config)
  reference, ref_metrics = jax.jit(step)(state, batches[0])

  param_shardings = partitioning.state_shardings(
      model_params.abstract_params(config), mesh)
  data = partitioning.data_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(
      list(partitioning.DEFAULT_RULES)):
    sharded_step = jax.jit(step, in_shardings=(None, data),
                           out_shardings=(None, None))
    sharded = state.replace(
        params=jax.device_put(state.params, param_shardings))
    sharded, metrics = sharded_step(sharded, jax.device_put(batches[0], data))
  np.testing.assert_allclose(_loss(metrics), _loss(ref_metrics), rtol=1e-5)
  flat = flax.traverse_util.flatten_dict(sharded.params, sep="/")
  kernel = flat["decoder/layers_0/ffn/fc1/kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.device_get(sharded.params), jax.device_get(reference.params))


@pytest.mark.integration  # Full train steps and their gradients.
@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_final_logits_bias_is_frozen(config, batches, name):
  """A buffer in BART: after steps with weight decay it is bitwise what it
  was (a non-zero value here, so decay would show), and it has no slots."""
  opt_config = optim.OptimizerConfig(name=name, learning_rate=1e-2,
                                     warmup_steps=1, total_steps=100,
                                     weight_decay=0.1)
  opt = optim.make_optimizer(opt_config)
  step = jax.jit(train_step.make_train_step(
      config, opt, train_step.ObjectiveConfig(), seed=0,
      learning_rate=optim.learning_rate_schedule(opt_config)))
  state = train_step.init_train_state(config, opt, jax.random.key(0))
  bias = 0.5 * jax.random.normal(jax.random.key(1), (config.vocab_size,))
  params = dict(state.params, final_logits_bias=bias)
  state = train_step.init_train_state(config, opt, jax.random.key(0)).replace(
      params=params, opt_state=opt.init(params))
  before = jax.tree.map(np.asarray, state.params)
  for batch in batches[:3]:
    state, _ = step(state, batch)
  after = jax.tree.map(np.asarray, state.params)
  assert after["final_logits_bias"].tobytes() == bias.__array__().tobytes()
  assert not np.array_equal(after["shared"]["embedding"],
                            before["shared"]["embedding"])
  slot_shapes = [leaf.shape for leaf in jax.tree.leaves(state.opt_state)]
  assert (config.vocab_size,) not in slot_shapes
  assert ((config.vocab_size, config.d_model) in slot_shapes
          or name == "adafactor")
  grads = jax.jit(jax.grad(lambda p: train_step.make_loss_sums(
      config, train_step.ObjectiveConfig())(
          p, batches[0], np.zeros_like(batches[0]["decoder_target_tokens"]),
          jax.random.key(2))["loss_sum"]))(state.params)
  assert not np.any(np.asarray(grads["final_logits_bias"]))
