"""Scalars to TensorBoard and to a JSONL file (easy to read from scripts)."""

import json
import os
from typing import Mapping, Optional

import tensorflow as tf


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites the JSONL at `path` without its rows after `step` (a resumed
  run logs those steps again); returns how many were dropped."""
  if not tf.io.gfile.exists(path):
    return 0
  with tf.io.gfile.GFile(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if json.loads(line)["step"] <= step]
  if len(kept) < len(lines):
    partial = path + ".tmp"
    with tf.io.gfile.GFile(partial, "w") as f:
      f.write("".join(kept))
    tf.io.gfile.rename(partial, path, overwrite=True)
  return len(lines) - len(kept)


class MetricsWriter:
  """Writes `<model_dir>/metrics.jsonl` and TensorBoard events; only the
  process that should write (process 0) creates one with `enabled=True`.

  `keep_until`: the step the run starts from; rows logged after it (by the
  run that was interrupted) are dropped, so each step appears once.
  """

  def __init__(self, model_dir: str, enabled: bool = True,
               keep_until: Optional[int] = None):
    self._enabled = enabled
    if enabled:
      tf.io.gfile.makedirs(model_dir)
      path = os.path.join(model_dir, "metrics.jsonl")
      if keep_until is not None:
        drop_rows_after(path, keep_until)
      self._jsonl = tf.io.gfile.GFile(path, "a")
      self._tensorboard = tf.summary.create_file_writer(
          os.path.join(model_dir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    with self._tensorboard.as_default(step=step):
      for name, value in scalars.items():
        tf.summary.scalar(name, value)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()
