"""seqio preprocessors that turn raw documents into ELMER's denoising pairs.

Pipeline per document: text field → `targets`, clean (invalid UTF-8 replaced,
empty documents dropped), tokenize, split long documents into chunks (or let
them be truncated), BART noise → `inputs`, then trim and append `</s>`.
"""

import functools
import json
from typing import Callable, Sequence

import seqio
import tensorflow as tf

from elmer_jax.data.noising import NoiseConfig, VocabTables, denoising_preprocessor


def text_to_targets(text_key: str = "text") -> Callable:
  """Keeps only the document text, as `targets`."""

  @seqio.map_over_dataset
  def rekey(features):
    return {"targets": features[text_key]}

  return rekey


def clean_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Replaces invalid UTF-8 with U+FFFD and drops empty documents."""

  def fix(features):
    text = tf.strings.unicode_transcode(
        features["targets"], "UTF-8", "UTF-8", errors="replace",
        replace_control_characters=False)
    return {**features, "targets": text}

  dataset = dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.filter(
      lambda x: tf.strings.length(tf.strings.strip(x["targets"])) > 0)


def _json_field(line: bytes, field: str) -> bytes:
  try:
    value = json.loads(line.decode("utf-8", errors="replace")).get(field, "")
  except (json.JSONDecodeError, AttributeError):
    value = ""
  return str(value).encode("utf-8")


def parse_jsonl(field: str = "text") -> Callable:
  """JSON lines → their `field` as `text`; unparsable lines become empty
  (and are then dropped by `clean_text`). Runs Python per line: parsing is a
  small cost next to tokenization, and only at the source."""

  @seqio.map_over_dataset
  def parse(features):
    text = tf.numpy_function(
        functools.partial(_json_field, field=field), [features["text"]],
        tf.string, stateful=False)
    text.set_shape([])
    return {"text": text}

  return parse


def pretraining_preprocessors(tables: VocabTables, noise: NoiseConfig,
                              text_key: str = "text",
                              split_long_documents: bool = True
                              ) -> Sequence[Callable]:
  """The full list for a denoising task over documents in `text_key`.

  `split_long_documents`: chunk documents longer than the target length into
  several examples (no text is thrown away); otherwise keep the first chunk.
  """
  steps = [text_to_targets(text_key), clean_text, seqio.preprocessors.tokenize]
  if split_long_documents:
    steps.append(seqio.preprocessors.split_tokens_to_targets_length)
  steps += [denoising_preprocessor(tables, noise),
            seqio.preprocessors.append_eos_after_trim]
  return steps

