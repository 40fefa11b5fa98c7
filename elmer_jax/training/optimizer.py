"""Optimizers and learning-rate schedules, from a plain config."""

import dataclasses
from typing import Optional

import optax

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "rsqrt", "constant")
# Top-level parameters that are buffers in BART/ELMER, never trained: no
# update, no weight decay, no optimizer slots. They are still saved,
# imported and exported with the others.
FROZEN_PARAMS = ("final_logits_bias",)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Linear warm-up to `learning_rate`, then `schedule`; global-norm clip.

  `total_steps` None (the default) ends the schedule at the run's last step:
  `TrainConfig` sets it to `TrainConfig.steps`, so `--gin...steps=N` moves it.
  """

  name: str = "adamw"
  learning_rate: float = 3e-4
  warmup_steps: int = 1000
  schedule: str = "cosine"
  total_steps: Optional[int] = None
  end_learning_rate_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-6
  clip_norm: float = 1.0

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"OptimizerConfig.name={self.name!r}; expected one of "
                       f"{OPTIMIZERS}.")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule={self.schedule!r}; expected "
                       f"one of {SCHEDULES}.")
    if self.warmup_steps < 0 or (self.total_steps is not None
                                 and self.total_steps <= self.warmup_steps):
      raise ValueError(
          f"OptimizerConfig needs 0 <= warmup_steps ({self.warmup_steps}) < "
          f"total_steps ({self.total_steps}).")


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  if config.total_steps is None and config.schedule == "cosine":
    raise ValueError("OptimizerConfig.total_steps is unset: a cosine schedule "
                     "needs its length (TrainConfig fills in its steps).")
  warmup = optax.linear_schedule(0.0, config.learning_rate,
                                 max(config.warmup_steps, 1))
  if config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(
        config.learning_rate, config.total_steps - config.warmup_steps,
        alpha=config.end_learning_rate_fraction)
  elif config.schedule == "rsqrt":
    start = max(config.warmup_steps, 1)
    decay = lambda step: config.learning_rate * (start / (step + start))**0.5
  else:
    decay = optax.constant_schedule(config.learning_rate)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def _labels(params) -> dict:
  return {name: "frozen" if name in FROZEN_PARAMS else "trained"
          for name in params}


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """Clip by global norm, then AdamW or Adafactor with the schedule; the
  `FROZEN_PARAMS` get a zero update and no state."""
  schedule = learning_rate_schedule(config)
  if config.name == "adamw":
    update = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                         weight_decay=config.weight_decay)
  else:
    update = optax.adafactor(schedule, weight_decay_rate=config.weight_decay
                             or None)
  trained = optax.chain(optax.clip_by_global_norm(config.clip_norm), update)
  return optax.multi_transform(
      {"trained": trained, "frozen": optax.set_to_zero()}, _labels)
