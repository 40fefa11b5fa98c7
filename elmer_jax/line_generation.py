"""Generation over a file of lines: output line i answers input line i.

A blank input line gives an empty output line (it is not decoded), an empty
file an empty file; `python -m elmer_jax.generate` is built on this.
"""

import json
import logging

import tensorflow as tf

from elmer_jax import decoding, trained_model

OUTPUT_FORMATS = ("text", "jsonl")


def read_lines(path: str) -> list[str]:
  """The file's lines (no line ends); a missing file, and a line that is not
  UTF-8 (by its 1-based number), are named."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"--input_file {path} does not exist; it needs "
                            "one input text per line.")
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read().splitlines()
  lines = []
  for number, line in enumerate(raw, start=1):
    try:
      lines.append(line.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise ValueError(f"{path} line {number} is not UTF-8 text ({e}); "
                       "--input_file needs one UTF-8 text per line.") from e
  return lines


def generate_lines(model: trained_model.TrainedModel, texts: list[str],
                   config: decoding.DecodeConfig, max_input_length: int,
                   batch_size: int, source: str) -> list[dict]:
  """One result (`text`, `tokens`, `exit_layers`) per text; blank texts get
  empty ones without being decoded (a warning names `source`, the file)."""
  filled = [i for i, text in enumerate(texts) if text.strip()]
  if len(filled) < len(texts):
    logging.warning("%d of %d lines of %s are blank: their output lines are "
                    "empty.", len(texts) - len(filled), len(texts), source)
  results = [{"text": "", "tokens": [], "exit_layers": []} for _ in texts]
  if filled:
    decoded = decoding.generate_text(
        model.config, model.params, model.vocabulary,
        [texts[i] for i in filled], config, max_input_length, batch_size)
    for i, result in zip(filled, decoded):
      results[i] = result
  return results


def write_lines(path: str, results: list[dict], output_format: str) -> None:
  """One line per result: its text ("text"), or all of it as JSON ("jsonl")."""
  # One write, even of nothing: GFile creates (truncates) a file only when
  # written to.
  with tf.io.gfile.GFile(path, "w") as f:
    f.write("".join((json.dumps(result) if output_format == "jsonl"
                     else result["text"].replace("\n", " ")) + "\n"
                    for result in results))
