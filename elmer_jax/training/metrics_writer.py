"""Scalars to TensorBoard and to a JSONL file (easy to read from scripts)."""

import json
import os
from typing import Mapping

import tensorflow as tf


class MetricsWriter:
  """Writes `<model_dir>/metrics.jsonl` and TensorBoard events; only the
  process that should write (process 0) creates one with `enabled=True`."""

  def __init__(self, model_dir: str, enabled: bool = True):
    self._enabled = enabled
    if enabled:
      tf.io.gfile.makedirs(model_dir)
      self._jsonl = tf.io.gfile.GFile(os.path.join(model_dir, "metrics.jsonl"),
                                      "a")
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
