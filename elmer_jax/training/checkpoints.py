"""Checkpoints with orbax: async saves, keep-last-K, resume, init from params.

Orbax writes each step to a temporary directory and renames it when complete,
so a save interrupted by a crash is never listed as a step; `latest_step` is
always a whole checkpoint. The data iterator's state is saved beside each
step (`<model_dir>/data/<step>`), written before the model state, so a step
that exists always has its data state.
"""

import os
from typing import Any, Optional

import flax
import orbax.checkpoint as ocp


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(dict(tree), sep="/")
  return {k: tuple(getattr(v, "shape", ())) for k, v in flat.items()}


def check_compatible(saved: Any, expected: Any, where: str) -> None:
  """Raises naming the first parameter path whose shape differs (before
  orbax would fail with a less helpful message)."""
  saved_shapes, expected_shapes = _flat_shapes(saved), _flat_shapes(expected)
  for path, shape in expected_shapes.items():
    if path not in saved_shapes:
      raise ValueError(f"{where} has no {path!r}; the model expects shape "
                       f"{shape}. Is it a checkpoint of this model?")
    if saved_shapes[path] != shape:
      raise ValueError(
          f"{where}: {path!r} has shape {saved_shapes[path]} but the model "
          f"expects {shape}; the model config differs from the checkpoint's.")


class Checkpointer:
  """The run's checkpoints under `<model_dir>/checkpoints`."""

  def __init__(self, model_dir: str, save_every: int, keep: int):
    model_dir = model_dir if "://" in model_dir else os.path.abspath(model_dir)
    self.directory = os.path.join(model_dir, "checkpoints")
    self.data_directory = os.path.join(model_dir, "data")
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            save_interval_steps=save_every, max_to_keep=keep,
            enable_async_checkpointing=True),
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def data_state_dir(self, step: int) -> str:
    return os.path.join(self.data_directory, str(step))

  def save(self, step: int, state: Any, data_iterator, force: bool = False
           ) -> bool:
    """Saves if `step` is due (or `force`); returns whether it saved."""
    if not (force or self._manager.should_save(step)):
      return False
    data_iterator.save(self.data_state_dir(step))
    return self._manager.save(step, args=ocp.args.StandardSave(state),
                              force=force)

  def restore(self, step: int, abstract_state: Any) -> Any:
    where = f"Checkpoint {os.path.join(self.directory, str(step))}"
    saved = self._manager.item_metadata(step)
    check_compatible(getattr(saved, "tree", saved)["params"],
                     abstract_state.params, where)
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

