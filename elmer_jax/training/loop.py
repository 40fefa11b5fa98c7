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

import dataclasses
import math
import os
import signal
import time
from typing import Callable, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from elmer_jax import console, flops, objectives, partitioning
from elmer_jax.data import feature_converter, input_checks, pipeline
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training import evaluation
from elmer_jax.training import optimizer as optim
from elmer_jax.training.checkpoints import (EVAL_LOSS, Checkpointer,
                                            check_params_checkpoint,
                                            restore_params)
from elmer_jax.training.metrics_writer import MetricsWriter
from elmer_jax.training import program as program_lib
from elmer_jax.training.program import Program
from elmer_jax.training.train_step import ObjectiveConfig, TrainState


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
    if self.optimizer.total_steps is None:  # The schedule follows `steps`.
      # A run no longer than its warm-up (a smoke test) ends in warm-up.
      total = max(self.steps, self.optimizer.warmup_steps + 1)
      object.__setattr__(self, "optimizer", dataclasses.replace(
          self.optimizer, total_steps=total))
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
  """Turns SIGTERM, and a first Ctrl-C (SIGINT), into a request to save and
  stop at the next step; a second Ctrl-C aborts at once without saving.

  With several processes the notice may reach one host first: JAX's
  preemption service (its own SIGTERM handler) passes it to all of them and
  picks the step every process stops at; Ctrl-C there is passed to it as a
  SIGTERM of this process.
  """

  def __init__(self):
    self.reason: Optional[str] = None
    self._multihost = jax.process_count() > 1
    self._previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    signal.signal(signal.SIGINT, self._interrupt)
    if not self._multihost:
      self._previous[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
      signal.signal(signal.SIGTERM, self._terminate)

  def _terminate(self, signum, frame):
    del signum, frame
    self.reason = self.reason or "SIGTERM"

  def _interrupt(self, signum, frame):
    del signum, frame
    # The OS default from now on: a second Ctrl-C ends the process even
    # while Python waits in a long native call.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    console.info("Ctrl-C: saving after this step, then stopping (Ctrl-C "
                 "again aborts without saving).")
    self.reason = self.reason or "SIGINT"
    if self._multihost:
      os.kill(os.getpid(), signal.SIGTERM)

  def stop_after(self, step: int) -> bool:
    """Whether to save and stop after `step`; call once per step."""
    if self._multihost:
      stop = multihost_utils.reached_preemption_sync_point(step)
      if stop:
        self.reason = self.reason or "SIGTERM"
      return stop
    return self.reason is not None

  def close(self) -> None:
    """Puts back the handlers found at start."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


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


def build(model_config: ElmerConfig, config: TrainConfig) -> Program:
  """`program.build` with the run's mesh, rules, batch, objective,
  optimizer and seed."""
  return program_lib.build(
      model_config, batch_size=config.batch_size, mesh=config.mesh,
      rules=config.rules, objective=config.objective,
      optimizer=config.optimizer, seed=config.seed)


def train(model_config: ElmerConfig, config: TrainConfig,
          model_dir: str) -> Optional[dict]:
  """Runs (or resumes) training to `config.steps`; returns the last logged
  metrics."""
  preemption = _Preemption()
  try:
    return _train(model_config, config, model_dir, preemption)
  finally:
    preemption.close()


def _train(model_config: ElmerConfig, config: TrainConfig, model_dir: str,
           preemption: _Preemption) -> Optional[dict]:
  program = build(model_config, config)
  lengths = {"inputs": config.encoder_length, "targets": config.decoder_length}
  checkpoints = Checkpointer(model_dir, config.checkpoint_every,
                             config.keep_checkpoints,
                             config.keep_best_checkpoints)
  if checkpoints.latest_step() is None and config.init_checkpoint:
    check_params_checkpoint(config.init_checkpoint, program.abstract.params,
                            config.fresh_params)

  shards = pipeline.process_shards(config.data_shards)
  input_checks.check_tasks(config.mixture_or_task, lengths, "train", shards,
                           log=console.info)
  console.info("starting the input pipeline and the model state...")
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
  flops_per_step = config.batch_size * flops.train_flops(
      model_config, config.encoder_length, config.decoder_length)
  data_sharding = program.data_sharding

  with program.context():
    start, state = _initial_state(config, checkpoints, iterator, program)
    # Rows logged after the restored step are logged again by this run.
    writer = MetricsWriter(model_dir, enabled=jax.process_index() == 0,
                           keep_until=start)
    eval_step = (jax.jit(evaluation.make_eval_step(
        model_config, config.objective, config.seed),
                         in_shardings=(program.shardings.params, data_sharding,
                                       None))
                 if eval_batches else None)

    logged, window, step_fn = None, _Window(), None
    for index in range(start, config.steps):
      batch = pipeline.global_batch(next(iterator), data_sharding)
      if step_fn is None:
        step_fn = _compile(program.step, state, batch)
        window = _Window()  # Speed and ETA leave compilation out.
      state, metrics = step_fn(state, batch)
      done = index + 1
      window.add(done, metrics)
      # Asked once: a signal arriving later in this step is handled at the
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
          console.info(_step_line(done, config.steps, logged, seconds))
          window = _Window()
      eval_metrics = None
      if eval_step and done % config.eval.every == 0:
        eval_metrics = evaluation.evaluate(eval_step, state.params,
                                           eval_batches, data_sharding)
        writer.write(done, eval_metrics)
        console.info(f"step {done} eval loss {eval_metrics[EVAL_LOSS]:.4f} "
                     f"accuracy {eval_metrics.get('eval/accuracy', 0):.3f}")
      if due_save:
        checkpoints.save(done, state, iterator, force=last,
                         metrics=eval_metrics)
      if stop:
        console.info(f"{preemption.reason}: saved step {done} and stopped.")
        break
    checkpoints.wait()
  checkpoints.close()
  writer.close()
  return logged


def _compile(step: Callable, state: TrainState, batch: dict) -> Callable:
  """The train step compiled ahead of time for these shapes, timed."""
  console.info("compiling the train step...")
  begin = time.time()
  compiled = step.lower(state, batch).compile()
  console.info(f"compiled the train step in {time.time() - begin:.1f}s")
  return compiled


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f"{minutes}m{seconds:02d}s"
  return f"{minutes // 60}h{minutes % 60:02d}m"


def _step_line(step: int, steps: int, logged: dict, seconds: float) -> str:
  """`step 50/1500 loss 7.77 accuracy 0.045 lr 3.0e-03 tokens/s 12,345 eta
  2m05s`: speed and ETA from this logging window's steps."""
  return (f"step {step}/{steps} loss {logged['loss']:.4f} "
          f"accuracy {logged['accuracy']:.3f} "
          f"lr {logged['learning_rate']:.2e} "
          f"tokens/s {logged['tokens_per_s']:,.0f} "
          f"eta {_duration(seconds * (steps - step))}")


def _initial_state(config: TrainConfig, checkpoints: Checkpointer, iterator,
                   program: Program) -> tuple[int, TrainState]:
  """(step, state): resume, else start from `init_checkpoint`'s parameters,
  else from scratch."""
  start, state = checkpoints.restore_latest(program.abstract)
  if start is not None:
    iterator.restore(checkpoints.data_state_dir(start))
    console.info(f"Resumed from step {start} in {checkpoints.directory}")
    return start, state
  state = program.init()
  console.info(f"Initialised {_count(state.params):,} parameters from seed "
               f"{config.seed}")
  if config.init_checkpoint:
    state = state.replace(params=restore_params(
        config.init_checkpoint, state.params, config.fresh_params))
    console.info(f"Initialised parameters from {config.init_checkpoint}")
  return 0, state


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


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
