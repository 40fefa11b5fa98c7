"""The pretraining loop: shard, resume, step, log, checkpoint.

Resume order: the latest complete checkpoint in `model_dir` (with its data
iterator state), else a fresh start. Randomness is step-indexed and the data
iterator is restored, so a resumed run repeats the uninterrupted one.
"""

import dataclasses
import math
import signal
import time
from typing import Optional

import flax.linen as nn
import jax
import numpy as np

from elmer_jax import flops, objectives, partitioning
from elmer_jax.data import pipeline
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training import optimizer as optim
from elmer_jax.training.checkpoints import Checkpointer
from elmer_jax.training.metrics_writer import MetricsWriter
from elmer_jax.training.train_step import (ObjectiveConfig, init_train_state,
                                           make_train_step)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything about a run except the model; bound from gin run files."""

  mixture_or_task: str = "sample_wiki_elmer"
  encoder_length: int = 512
  decoder_length: int = 512
  batch_size: int = 64
  steps: int = 1000
  seed: int = 0
  log_every: int = 50
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  pack: bool = False
  peak_tflops: float = 0.0  # Per device; 0 leaves MFU out of the metrics.
  mesh: partitioning.MeshConfig = partitioning.MeshConfig()
  rules: partitioning.Rules = partitioning.DEFAULT_RULES
  objective: ObjectiveConfig = ObjectiveConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig()


class NonFiniteLossError(RuntimeError):
  pass


class _Preemption:
  """Turns SIGTERM into a request to save and stop at the next step."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True


def train(model_config: ElmerConfig, config: TrainConfig,
          model_dir: str) -> Optional[dict]:
  """Runs (or resumes) training to `config.steps`; returns the last logged
  metrics."""
  mesh = partitioning.make_mesh(config.mesh)
  partitioning.check_batch_size(config.batch_size, mesh, config.rules)
  lengths = {"inputs": config.encoder_length, "targets": config.decoder_length}
  data_sharding = partitioning.data_sharding(mesh, config.rules)
  optimizer = optim.make_optimizer(config.optimizer)
  schedule = optim.learning_rate_schedule(config.optimizer)
  step_fn = make_train_step(model_config, optimizer, config.objective,
                            config.seed, schedule)
  init = lambda: init_train_state(model_config, optimizer,
                                  jax.random.key(config.seed), boxed=True)
  boxed = jax.eval_shape(init)
  shardings = partitioning.state_shardings(boxed, mesh, config.rules)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(boxed), shardings)

  iterator = pipeline.ResumableIterator(pipeline.get_dataset(
      config.mixture_or_task, lengths, "train", config.batch_size,
      pipeline.converter_for(config.mixture_or_task, config.pack),
      seed=config.seed))
  checkpoints = Checkpointer(model_dir, config.checkpoint_every,
                             config.keep_checkpoints)
  writer = MetricsWriter(model_dir, enabled=jax.process_index() == 0)
  preemption = _Preemption()
  flops_per_step = config.batch_size * flops.train_flops(
      model_config, config.encoder_length, config.decoder_length)

  with jax.set_mesh(mesh), nn.logical_axis_rules(list(config.rules)):
    start = checkpoints.latest_step()
    if start is None:
      start = 0
      state = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
    else:
      state = checkpoints.restore(start, abstract)
      iterator.restore(checkpoints.data_state_dir(start))
      print(f"Resumed from step {start} in {checkpoints.directory}")
    step = jax.jit(step_fn, in_shardings=(shardings, data_sharding),
                   out_shardings=(shardings, None), donate_argnums=0)

    logged, sums, window_start, window_steps = None, None, time.time(), 0
    for index in range(start, config.steps):
      batch = pipeline.global_batch(next(iterator), data_sharding)
      state, metrics = step(state, batch)
      loss = float(metrics["loss_sum"]) / max(float(metrics["weight_sum"]), 1)
      if not math.isfinite(loss):
        checkpoints.wait()
        raise NonFiniteLossError(
            f"Loss is {loss} at step {index + 1}; stopping. The latest "
            f"checkpoint is still step {checkpoints.latest_step()}.")
      sums = metrics if sums is None else jax.tree.map(np.add, sums, metrics)
      window_steps += 1
      done = index + 1
      if done % config.log_every == 0 or done == config.steps:
        seconds = (time.time() - window_start) / window_steps
        logged = _summary(sums, window_steps, seconds, config, flops_per_step,
                          metrics)
        writer.write(done, logged)
        eta = seconds * (config.steps - done)
        print(f"step {done}/{config.steps} loss {logged['loss']:.4f} "
              f"tokens/s {logged['tokens_per_s']:.0f} eta {eta:.0f}s",
              flush=True)
        sums, window_start, window_steps = None, time.time(), 0
      last = done == config.steps or preemption.requested
      checkpoints.save(done, state, iterator, force=last)
      if preemption.requested:
        print(f"SIGTERM: saved step {done} and stopped.", flush=True)
        break
    checkpoints.wait()
  checkpoints.close()
  writer.close()
  return logged


def _summary(sums, steps: int, seconds: float, config: TrainConfig,
             flops_per_step: int, last_metrics) -> dict:
  """Means over the logging window, plus speed, learning rate, grad norm."""
  out = objectives.summarize({k: v for k, v in sums.items()
                              if k not in ("grad_norm", "learning_rate")})
  out = {k: v for k, v in out.items() if math.isfinite(v)}
  tokens = config.batch_size * (config.encoder_length + config.decoder_length)
  out.update(
      grad_norm=float(np.asarray(sums["grad_norm"])) / steps,
      learning_rate=float(np.asarray(last_metrics["learning_rate"])),
      step_time_s=seconds, tokens_per_s=tokens / seconds)
  if config.peak_tflops:
    out["mfu"] = flops_per_step / seconds / (
        config.peak_tflops * 1e12 * jax.device_count())
  return out
