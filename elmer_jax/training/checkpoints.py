"""Checkpoints with orbax: async saves, keep-last-K (+ best by eval loss),
resume, and parameters from another run (fine-tuning).

Orbax writes each step to a temporary directory and renames it when complete,
so a save interrupted by a crash is never listed as a step. A step damaged
afterwards (truncated or missing files) fails to read back: resuming moves it
aside to `<model_dir>/checkpoints_broken/`, says so, and takes the step
before. The data iterator's state is saved beside each
step (`<model_dir>/data/<step>`), written before the model state, so a step
that exists always has its data state; data states of steps orbax has
dropped are deleted with them.
"""

import os
import time
from typing import Any, Mapping, Optional, Sequence

import flax
import jax
import orbax.checkpoint as ocp
import tensorflow as tf

from elmer_jax import console, distributed, shapes

EVAL_LOSS = "eval/loss"


class IncompatibleCheckpointError(ValueError):
  """The checkpoint is whole but belongs to another model config."""


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(dict(tree), sep="/")
  return {k: tuple(getattr(v, "shape", ())) for k, v in flat.items()}


def check_compatible(saved: Any, expected: Any, where: str,
                     may_lack: Sequence[str] = ()) -> None:
  """Raises naming every parameter path whose shape differs or that `saved`
  lacks (before orbax would fail with a less helpful message). `saved` may
  lack the paths that start with one of `may_lack`."""
  shapes.check_shapes(
      _flat_shapes(saved), _flat_shapes(expected), where, may_lack=may_lack,
      may_add=shapes.ANY, error=IncompatibleCheckpointError,
      hint="Is it a checkpoint of this model, made with the same config?")


def _tree(metadata) -> Any:
  return getattr(metadata, "tree", metadata)


class Checkpointer:
  """The run's checkpoints under `<model_dir>/checkpoints`.

  Keeps the last `keep` steps and, with `keep_best > 0`, also the `keep_best`
  steps of lowest eval loss (steps saved with `metrics={EVAL_LOSS: ...}`).
  """

  def __init__(self, model_dir: str, save_every: int, keep: int,
               keep_best: int = 0):
    model_dir = model_dir if "://" in model_dir else os.path.abspath(model_dir)
    self.directory = os.path.join(model_dir, "checkpoints")
    self.broken_directory = os.path.join(model_dir, "checkpoints_broken")
    self.data_directory = os.path.join(model_dir, "data")
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    best = {}
    if keep_best:
      eval_loss = lambda metrics: metrics[EVAL_LOSS]
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=eval_loss, reverse=True, n=keep_best,
          keep_checkpoints_without_metrics=False))
      best = dict(best_fn=eval_loss, best_mode="min")
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                save_every),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
                policies),
            enable_async_checkpointing=True, cleanup_tmp_directories=True,
            **best),
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step of lowest eval loss (the latest when not tracking best)."""
    return self._manager.best_step()

  def data_state_dir(self, step: int) -> str:
    return os.path.join(self.data_directory, str(step))

  def due(self, step: int) -> bool:
    """Whether the save policy asks for a checkpoint at `step`."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, data_iterator, force: bool = False,
           metrics: Optional[Mapping[str, float]] = None) -> bool:
    """Saves if `step` is due (or `force`); returns whether it saved."""
    if not (force or self.due(step)):
      return False
    data_iterator.save(self.data_state_dir(step))
    saved = self._manager.save(step, args=ocp.args.StandardSave(state),
                               metrics=dict(metrics) if metrics else None,
                               force=force)
    self._drop_stale_data_states(keep={step, *self._manager.all_steps()})
    return saved

  def _drop_stale_data_states(self, keep: set[int]) -> None:
    if not tf.io.gfile.isdir(self.data_directory):
      return
    for name in tf.io.gfile.listdir(self.data_directory):
      name = name.rstrip("/")
      if name.isdigit() and int(name) not in keep:
        try:
          tf.io.gfile.rmtree(os.path.join(self.data_directory, name))
        except tf.errors.NotFoundError:
          pass  # Another process removed it first.

  def restore(self, step: int, abstract_state: Any) -> Any:
    where = f"Checkpoint {os.path.join(self.directory, str(step))}"
    saved = self._manager.item_metadata(step)
    check_compatible(_tree(saved)["params"], abstract_state.params, where)
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def restore_latest(self, abstract_state: Any
                     ) -> tuple[Optional[int], Any]:
    """(step, state) of the latest step that reads back whole on every
    process; (None, None) when there is no checkpoint. A step that does not
    read back is moved aside, logged, and the one before it tried."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      state, error = None, None
      try:
        state = self.restore(step, abstract_state)
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        error = f"{type(e).__name__}: {e}"
      if distributed.min_over_processes(error is None):
        return step, state
      self._set_aside(step, error or "another process could not read it")
    # Every step has been set aside by now; steps set aside by an earlier
    # attempt count too: never a silent fresh start over broken checkpoints.
    if tf.io.gfile.isdir(self.broken_directory):
      raise FileNotFoundError(
          f"No checkpoint in {self.directory} reads back whole; the broken "
          f"ones are in {self.broken_directory}. Restore one from a copy, or "
          "move checkpoints_broken/ away to start from scratch.")
    return None, None

  def _set_aside(self, step: int, error: str) -> None:
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.broken_directory, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      console.info(f"Skipping checkpoint step {step}: it does not read back "
                   f"({error[:500]}). Moved it to {target}; resuming from the "
                   "step before.")
      tf.io.gfile.makedirs(self.broken_directory)
      tf.io.gfile.rename(source, target)
    distributed.barrier(f"set_aside_{step}")
    self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _read_only(directory: str) -> ocp.CheckpointManager:
  """The complete steps of a `checkpoints/` directory (finalised: renamed
  locally, `commit_success.txt` on GCS), and the best by eval loss."""
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True, save_interval_steps=0, create=False,
      best_fn=lambda m: m[EVAL_LOSS], best_mode="min"))


def _params_item(path: str) -> str:
  """The orbax item directory that holds a state with `params`: `path` may be
  that item, a step directory, a `checkpoints/` directory or a run directory
  (the latter two: their latest step)."""
  # Orbax reads relative local paths as nothing (metadata None).
  path = path if "://" in path else os.path.abspath(path)
  for candidate in (path, os.path.join(path, "checkpoints")):
    if not tf.io.gfile.isdir(candidate):
      continue
    if tf.io.gfile.exists(os.path.join(candidate, "default")):
      return os.path.join(candidate, "default")
    with _read_only(candidate) as manager:  # Complete steps only.
      latest = manager.latest_step()
    if latest is not None:
      return os.path.join(candidate, str(latest), "default")
    if tf.io.gfile.exists(os.path.join(candidate, "_METADATA")):
      return candidate
  raise FileNotFoundError(
      f"Init checkpoint {path!r} is not readable: expected an orbax "
      "checkpoint step directory (…/checkpoints/<step>), its `default` item, "
      "or a run directory with checkpoints/<step> inside.")


def check_params_checkpoint(path: str, abstract_params: Any,
                            fresh: Sequence[str] = ()) -> dict:
  """Checks that `path` holds parameters shaped like `abstract_params`
  (except those starting with a `fresh` prefix, which it may lack); returns
  the item directory and the saved parameter paths. Raises naming the path
  and every mismatching parameter (cheap: reads metadata only)."""
  item = _params_item(path)
  try:
    metadata = ocp.StandardCheckpointer().metadata(item)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise FileNotFoundError(f"Init checkpoint {item} is not a readable orbax "
                            f"checkpoint: {e}") from e
  tree = _tree(getattr(metadata, "item_metadata", metadata))
  if not tree or "params" not in tree:
    raise ValueError(f"Init checkpoint {item} has no 'params' entry; found "
                     f"{sorted(tree or ())}.")
  check_compatible(tree["params"], abstract_params, f"Init checkpoint {item}",
                   fresh)
  return {"item": item, "saved": set(_flat_shapes(tree["params"]))}


def restore_params(path: str, params: Any, fresh: Sequence[str] = ()) -> Any:
  """`params` with every entry the checkpoint at `path` has replaced by the
  saved one (another run's parameters: no optimizer state, no step). Entries
  starting with a `fresh` prefix that the checkpoint lacks (a head that
  fine-tuning adds) keep their values from `params`."""
  found = check_params_checkpoint(path, params, fresh)
  flat = flax.traverse_util.flatten_dict(dict(params), sep="/")
  wanted = flax.traverse_util.unflatten_dict(
      {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
       for k, v in flat.items() if k in found["saved"]}, sep="/")
  restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
  with ocp.PyTreeCheckpointer() as checkpointer:
    restored = checkpointer.restore(found["item"], args=ocp.args.PyTreeRestore(
        item={"params": wanted}, restore_args={"params": restore_args},
        partial_restore=True))
  flat.update(flax.traverse_util.flatten_dict(restored["params"], sep="/"))
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def inference_step(model_dir: str, step: Optional[int] = None) -> str:
  """The step directory to generate or evaluate with: `step` if given, else
  the step of lowest eval loss if the run tracked one, else the latest."""
  directory = os.path.join(model_dir, "checkpoints")
  if not tf.io.gfile.isdir(directory):
    raise FileNotFoundError(f"{model_dir} has no checkpoints/ directory: is "
                            "it the --model_dir of a training run?")
  with _read_only(directory) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"{directory} holds no complete checkpoint.")
    if step is None:
      step = manager.best_step() or manager.latest_step()
    elif step not in steps:
      raise ValueError(f"{directory} has no step {step}; it has "
                       f"{sorted(steps)}.")
  return os.path.join(directory, str(step))


def load_params(path: str, abstract_params: Any) -> Any:
  """Parameters for inference from a checkpoint `path` (see
  `restore_params` for what it may be), on the default device."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return restore_params(path, jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      abstract_params))
