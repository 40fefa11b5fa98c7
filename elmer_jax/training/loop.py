"""The training loop: shard, resume, step, evaluate, log, checkpoint.

Start order: the latest complete checkpoint in `model_dir` (with its data
iterator state), else the parameters of `init_checkpoint` (fine-tuning: fresh
optimizer, step 0), else a fresh initialisation. Randomness is step-indexed
and the data iterator is restored, so a resumed run repeats the uninterrupted
one.

The loop never waits on the device between steps: metrics stay on the device
until a log or checkpoint step reads the whole window at once, and a
non-finite loss found then names its step. A window is checked before its
checkpoint is written, so a diverged state never becomes the latest.
"""

import contextlib
import dataclasses
import math
import signal
import time
from typing import Callable, Optional

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np

from elmer_jax import flops, objectives, partitioning
from elmer_jax.data import feature_converter, pipeline
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training import evaluation
from elmer_jax.training import optimizer as optim
from elmer_jax.training.checkpoints import (EVAL_LOSS, Checkpointer,
                                            check_params_checkpoint,
                                            restore_params)
from elmer_jax.training.metrics_writer import MetricsWriter
from elmer_jax.training.train_step import (ObjectiveConfig, TrainState,
                                           init_train_state, make_train_step)


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
  keep_best_checkpoints: int = 0  # Also keep this many of lowest eval loss.
  init_checkpoint: Optional[str] = None  # Parameters to start from.
  # Parameters (path prefixes) the init checkpoint may lack: they start
  # fresh, e.g. ('concat_head',) when fine-tuning a pretrained model.
  fresh_params: tuple[str, ...] = ()
  pack: bool = False
  # `<mask>` slots beyond each target's `</s>` (decoder_length, batch or
  # none) and their labels (ignore or eos): see data/feature_converter.py.
  spare_slots: str = "decoder_length"
  spare_labels: str = "ignore"
  # Input shards (0: one per process), dealt out to the processes. A resumed
  # run needs the same count, read by any number of processes dividing it.
  data_shards: int = 0
  peak_tflops: float = 0.0  # Per device; 0 leaves MFU out of the metrics.
  mesh: partitioning.MeshConfig = partitioning.MeshConfig()
  rules: partitioning.Rules = partitioning.DEFAULT_RULES
  objective: ObjectiveConfig = ObjectiveConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig()
  eval: evaluation.EvalConfig = evaluation.EvalConfig()

  def __post_init__(self):
    for name, value, allowed in (
        ("spare_slots", self.spare_slots, feature_converter.SPARE_SLOTS),
        ("spare_labels", self.spare_labels, feature_converter.SPARE_LABELS)):
      if value not in allowed:
        raise ValueError(f"TrainConfig.{name}={value!r}; expected one of "
                         f"{allowed}.")
    if self.keep_best_checkpoints and not self.eval.every:
      raise ValueError(
          "TrainConfig.keep_best_checkpoints needs an eval loss: set "
          "EvalConfig.every > 0 (a multiple of checkpoint_every).")
    if self.keep_best_checkpoints and self.eval.every % self.checkpoint_every:
      raise ValueError(
          f"EvalConfig.every={self.eval.every} must be a multiple of "
          f"TrainConfig.checkpoint_every={self.checkpoint_every}, so every "
          "eval result lands on a checkpoint (for keep_best_checkpoints).")


class NonFiniteLossError(RuntimeError):
  pass


class _Preemption:
  """Turns SIGTERM into a request to save and stop at the next step.

  With several processes the notice may reach one host first: JAX's
  preemption service (its own SIGTERM handler) passes it to all of them and
  picks the step every process stops at.
  """

  def __init__(self):
    self._requested = False
    self._multihost = jax.process_count() > 1
    if not self._multihost:
      signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._requested = True

  def stop_after(self, step: int) -> bool:
    """Whether to save and stop after `step`; call once per step."""
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested


class _Window:
  """Per-step metrics still on the device, read in one go when needed."""

  def __init__(self):
    self.pending: list[tuple[int, dict]] = []
    self.start = time.time()

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))

  def read(self, latest_checkpoint: Optional[int]) -> Optional[dict]:
    """Sums over the window; raises naming the first non-finite step."""
    if not self.pending:
      return None
    host = jax.device_get([m for _, m in self.pending])
    # Kept on the host: a later read of this window transfers nothing again.
    self.pending = [(step, m) for (step, _), m in zip(self.pending, host)]
    for (step, _), metrics in zip(self.pending, host):
      loss = float(metrics["loss_sum"]) / max(float(metrics["weight_sum"]), 1)
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"Loss is {loss} at step {step}; stopping. The latest checkpoint "
            f"is still step {latest_checkpoint}.")
    sums = jax.tree.map(lambda *x: np.sum(x, axis=0), *host)
    return dict(sums, learning_rate=host[-1]["learning_rate"])


@dataclasses.dataclass(frozen=True)
class Program:
  """The compiled-to-be pieces of a run: mesh, shardings, state init and the
  jitted step. Trace and run them inside `context()`."""

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


def build(model_config: ElmerConfig, config: TrainConfig) -> Program:
  """Mesh, shardings and the jitted train step for `config` (no data, no
  compilation yet); checks the mesh and the batch against the devices."""
  mesh = partitioning.make_mesh(config.mesh)
  partitioning.check_batch_size(config.batch_size, mesh, config.rules)
  data_sharding = partitioning.data_sharding(mesh, config.rules)
  optimizer = optim.make_optimizer(config.optimizer)
  step_fn = make_train_step(model_config, optimizer, config.objective,
                            config.seed,
                            optim.learning_rate_schedule(config.optimizer))
  init = lambda: init_train_state(model_config, optimizer,
                                  jax.random.key(config.seed), boxed=True)
  boxed = jax.eval_shape(init)
  shardings = partitioning.state_shardings(boxed, mesh, config.rules)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(boxed), shardings)
  return Program(
      mesh=mesh, rules=config.rules, data_sharding=data_sharding,
      shardings=shardings, abstract=abstract,
      init=jax.jit(lambda: nn.unbox(init()), out_shardings=shardings),
      step=jax.jit(step_fn, in_shardings=(shardings, data_sharding),
                   out_shardings=(shardings, None), donate_argnums=0))


def train(model_config: ElmerConfig, config: TrainConfig,
          model_dir: str) -> Optional[dict]:
  """Runs (or resumes) training to `config.steps`; returns the last logged
  metrics."""
  program = build(model_config, config)
  lengths = {"inputs": config.encoder_length, "targets": config.decoder_length}
  checkpoints = Checkpointer(model_dir, config.checkpoint_every,
                             config.keep_checkpoints,
                             config.keep_best_checkpoints)
  if checkpoints.latest_step() is None and config.init_checkpoint:
    check_params_checkpoint(config.init_checkpoint, program.abstract.params,
                            config.fresh_params)

  iterator = pipeline.ResumableIterator(pipeline.process_datasets(
      config.mixture_or_task, lengths, "train", config.batch_size,
      pipeline.converter_for(config.mixture_or_task, config.pack,
                             config.spare_slots, config.spare_labels),
      num_shards=config.data_shards, seed=config.seed))
  eval_batches = (evaluation.read_batches(
      config.eval, config.mixture_or_task, lengths, config.batch_size,
      config.pack, config.seed, config.data_shards, config.spare_slots,
      config.spare_labels)
                  if config.eval.every else None)
  writer = MetricsWriter(model_dir, enabled=jax.process_index() == 0)
  preemption = _Preemption()
  flops_per_step = config.batch_size * flops.train_flops(
      model_config, config.encoder_length, config.decoder_length)
  data_sharding = program.data_sharding

  with program.context():
    start, state = _initial_state(config, checkpoints, iterator, program)
    eval_step = (jax.jit(evaluation.make_eval_step(
        model_config, config.objective, config.seed),
                         in_shardings=(program.shardings.params, data_sharding,
                                       None))
                 if eval_batches else None)

    logged, window = None, _Window()
    for index in range(start, config.steps):
      batch = pipeline.global_batch(next(iterator), data_sharding)
      state, metrics = program.step(state, batch)
      done = index + 1
      window.add(done, metrics)
      # Asked once: a SIGTERM arriving later in this step is handled at the
      # next one, never announced as saved without a save.
      stop = preemption.stop_after(done)
      last = done == config.steps or stop
      due_log = done % config.log_every == 0 or last
      due_save = last or checkpoints.due(done)
      if due_log or due_save:
        steps_read = len(window.pending)
        sums = window.read(checkpoints.latest_step())
        if due_log:
          seconds = (time.time() - window.start) / steps_read
          logged = _summary(sums, steps_read, seconds, config, flops_per_step)
          writer.write(done, logged)
          print(f"step {done}/{config.steps} loss {logged['loss']:.4f} "
                f"tokens/s {logged['tokens_per_s']:.0f} "
                f"eta {seconds * (config.steps - done):.0f}s", flush=True)
          window = _Window()
      eval_metrics = None
      if eval_step and done % config.eval.every == 0:
        eval_metrics = evaluation.evaluate(eval_step, state.params,
                                           eval_batches, data_sharding)
        writer.write(done, eval_metrics)
        print(f"step {done} eval loss {eval_metrics[EVAL_LOSS]:.4f}",
              flush=True)
      if due_save:
        checkpoints.save(done, state, iterator, force=last,
                         metrics=eval_metrics)
      if stop:
        print(f"SIGTERM: saved step {done} and stopped.", flush=True)
        break
    checkpoints.wait()
  checkpoints.close()
  writer.close()
  return logged


def _initial_state(config: TrainConfig, checkpoints: Checkpointer, iterator,
                   program: Program) -> tuple[int, TrainState]:
  """(step, state): resume, else start from `init_checkpoint`'s parameters,
  else from scratch."""
  start, state = checkpoints.restore_latest(program.abstract)
  if start is not None:
    iterator.restore(checkpoints.data_state_dir(start))
    print(f"Resumed from step {start} in {checkpoints.directory}")
    return start, state
  state = program.init()
  if config.init_checkpoint:
    state = state.replace(params=restore_params(
        config.init_checkpoint, state.params, config.fresh_params))
    print(f"Initialised parameters from {config.init_checkpoint}")
  return 0, state


def _summary(sums: dict, steps: int, seconds: float, config: TrainConfig,
             flops_per_step: int) -> dict:
  """Means over the logging window, plus speed, learning rate, grad norm."""
  out = objectives.summarize({k: v for k, v in sums.items()
                              if k not in ("grad_norm", "learning_rate")})
  out = {k: v for k, v in out.items() if math.isfinite(v)}
  tokens = config.batch_size * (config.encoder_length + config.decoder_length)
  out.update(
      grad_norm=float(sums["grad_norm"]) / steps,
      learning_rate=float(sums["learning_rate"]),
      step_time_s=seconds, tokens_per_s=tokens / seconds)
  if config.peak_tflops:
    out["mfu"] = flops_per_step / seconds / (
        config.peak_tflops * 1e12 * jax.device_count())
  return out
