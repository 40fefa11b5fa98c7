"""seqio preprocessors that turn raw documents into ELMER's denoising pairs.

Pipeline per document: text field → `targets`, clean (invalid UTF-8 replaced,
empty documents dropped), tokenize, split long documents into chunks (or let
them be truncated), BART noise → `inputs`, then trim and add the special
tokens: `<s> inputs </s>` (as BART's `tokenizer.encode`, unless the
vocabulary says otherwise) and `targets </s>`.
"""

import functools
import json
from typing import Callable, Optional, Sequence

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


@seqio.map_over_dataset
def parse_text_line(line: tf.Tensor) -> dict[str, tf.Tensor]:
  """A line of a text file is one document."""
  return {"text": line}


def parse_jsonl(field: str = "text") -> Callable:
  """JSON lines → their `field` as `text`; unparsable lines become empty
  (and are then dropped by `clean_text`). Runs Python per line: parsing is a
  small cost next to tokenization, and only at the source."""

  @seqio.map_over_dataset
  def parse(line):
    text = tf.numpy_function(functools.partial(_json_field, field=field),
                             [line], tf.string, stateful=False)
    text.set_shape([])
    return {"text": text}

  return parse


def split_to_target_length(dataset: tf.data.Dataset, sequence_length,
                           output_features) -> tf.data.Dataset:
  """Splits each tokenized document into chunks that fit the targets (with
  room for `</s>`), so long documents become several examples."""
  room = 1 if output_features["targets"].add_eos else 0
  chunk = sequence_length["targets"] - room

  def split(features):
    tokens = features["targets"]
    starts = tf.range(0, tf.size(tokens), chunk)
    pieces = tf.RaggedTensor.from_row_starts(tokens, starts)
    return tf.data.Dataset.from_tensor_slices({"targets": pieces})

  return dataset.flat_map(split)


def add_special_tokens_after_trim(bos_id: Optional[int]) -> Callable:
  """A seqio preprocessor: trims each feature so that its special tokens fit
  the sequence length, then writes `<s>` (`bos_id`; None: none) before
  `inputs` and `</s>` after every feature with `add_eos`."""

  def preprocess(dataset: tf.data.Dataset, sequence_length,
                 output_features) -> tf.data.Dataset:

    def add(features):
      out = dict(features)
      for key, feature in output_features.items():
        if key not in features:
          continue
        tokens = features[key]
        before = ([bos_id] if key == "inputs" and bos_id is not None else [])
        after = [feature.vocabulary.eos_id] if feature.add_eos else []
        if sequence_length and sequence_length.get(key):
          tokens = tokens[:sequence_length[key] - len(before) - len(after)]
        out[key] = tf.concat([tf.constant(before, tokens.dtype), tokens,
                              tf.constant(after, tokens.dtype)], 0)
      return out

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE)

  return preprocess


def pretraining_preprocessors(tables: VocabTables, noise: NoiseConfig,
                              text_key: str = "text",
                              split_long_documents: bool = True,
                              bos_id: Optional[int] = None
                              ) -> Sequence[Callable]:
  """The full list for a denoising task over documents in `text_key`.

  `split_long_documents`: chunk documents longer than the target length into
  several examples (no text is thrown away); otherwise keep the first chunk.
  `bos_id`: written before the encoder input (None: no `<s>`).
  """
  steps = [text_to_targets(text_key), clean_text, seqio.preprocessors.tokenize]
  if split_long_documents:
    steps.append(split_to_target_length)
  steps += [denoising_preprocessor(tables, noise),
            add_special_tokens_after_trim(bos_id)]
  return steps

