"""Learning-rate schedules and optimizer configs."""

import numpy as np
import pytest

from elmer_jax.training import optimizer as optim


def test_warmup_then_cosine_to_the_floor():
  config = optim.OptimizerConfig(learning_rate=1e-3, warmup_steps=10,
                                 total_steps=110,
                                 end_learning_rate_fraction=0.1)
  lr = optim.learning_rate_schedule(config)
  np.testing.assert_allclose(lr(0), 0.0)
  np.testing.assert_allclose(lr(5), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(10), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(60), 1e-4 + 0.9e-3 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(lr(110), 1e-4, rtol=1e-5)


def test_rsqrt_decay_after_warmup():
  config = optim.OptimizerConfig(learning_rate=1e-3, warmup_steps=100,
                                 total_steps=10_000, schedule="rsqrt")
  lr = optim.learning_rate_schedule(config)
  np.testing.assert_allclose(lr(100), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(400), 1e-3 * (100 / 400)**0.5, rtol=1e-5)


@pytest.mark.parametrize("changes,pattern", [
    ({"name": "sgd"}, r"name='sgd'; expected one of \('adamw', 'adafactor'\)"),
    ({"schedule": "linear"}, r"schedule='linear'"),
    ({"warmup_steps": 10, "total_steps": 10}, r"warmup_steps \(10\) < "
                                              r"total_steps \(10\)"),
])
def test_bad_optimizer_configs(changes, pattern):
  with pytest.raises(ValueError, match=pattern):
    optim.OptimizerConfig(**changes)


def test_adafactor_builds_and_updates():
  import jax.numpy as jnp
  opt = optim.make_optimizer(optim.OptimizerConfig(name="adafactor",
                                                   total_steps=10_000))
  params = {"w": jnp.ones((4, 3))}
  updates, _ = opt.update({"w": jnp.ones((4, 3))}, opt.init(params), params)
  assert updates["w"].shape == (4, 3)


def test_the_schedule_follows_train_steps_unless_set_on_the_optimizer():
  from elmer_jax.training.loop import TrainConfig
  config = TrainConfig(steps=200, optimizer=optim.OptimizerConfig(
      learning_rate=1e-3, warmup_steps=10, end_learning_rate_fraction=0.1))
  assert config.optimizer.total_steps == 200
  lr = optim.learning_rate_schedule(config.optimizer)
  np.testing.assert_allclose(lr(200), 1e-4, rtol=1e-5)  # The floor, at the end.
  assert float(lr(150)) > 1e-4 * 1.5
  explicit = TrainConfig(steps=200, optimizer=optim.OptimizerConfig(
      warmup_steps=10, total_steps=1000))
  assert explicit.optimizer.total_steps == 1000


def test_cosine_schedule_unset_length_is_named_and_short_runs_end_in_warmup():
  with pytest.raises(ValueError, match="total_steps is unset"):
    optim.learning_rate_schedule(optim.OptimizerConfig())
  from elmer_jax.training.loop import TrainConfig
  short = TrainConfig(steps=10, optimizer=optim.OptimizerConfig(
      warmup_steps=30))  # Ends in warm-up.
  assert short.optimizer.total_steps == 31
