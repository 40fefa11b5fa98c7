"""seqio preprocessors of fine-tuning pairs: source → target, no noising.

Readers and parsers make `inputs`/`targets` strings (TFDS records, GLGE's
`.src`/`.tgt`, JSONL, TSV, the bundled sample); `finetuning_preprocessors`
then cleans, tokenizes and adds the special tokens. tasks/finetuning.py
registers the tasks built from them.
"""

import functools
import json
from typing import Callable, Optional, Sequence

import seqio
import tensorflow as tf

from elmer_jax.data import preprocessors

QG_SEPARATOR = " [SEP] "


def rekey(source_key: str, target_key: str) -> Callable:
  """Keeps only the pair, as `inputs` and `targets`."""

  @seqio.map_over_dataset
  def pick(features):
    return {"inputs": features[source_key], "targets": features[target_key]}

  return pick


@seqio.map_over_dataset
def squad_question_generation(features: dict) -> dict[str, tf.Tensor]:
  """SQuAD → `"answer [SEP] passage"` and the question. Questions without
  an answer get an empty input, which `clean_pairs` then drops."""
  answers = features["answers"]["text"]
  answer = tf.concat([answers, [""]], 0)[0]
  inputs = tf.strings.join([answer, QG_SEPARATOR, features["context"]])
  has_answer = tf.strings.length(tf.strings.strip(answer)) > 0
  return {"inputs": tf.where(has_answer, inputs, ""),
          "targets": features["question"]}


def _json_fields(line: bytes, fields: Sequence[str]) -> list[bytes]:
  try:
    record = json.loads(line.decode("utf-8", errors="replace"))
    values = [record.get(field) for field in fields]
  except (json.JSONDecodeError, AttributeError):
    values = [None] * len(fields)
  return [b"" if value is None else str(value).encode("utf-8")
          for value in values]


def parse_jsonl_pair(source_field: str, target_field: str) -> Callable:
  """JSON lines → `inputs`/`targets` from two fields (non-string values via
  `str`); unparsable lines and missing or null fields become empty (and are
  dropped by `clean_pairs`)."""

  @seqio.map_over_dataset
  def parse(line):
    source, target = tf.numpy_function(
        functools.partial(_json_fields, fields=(source_field, target_field)),
        [line], [tf.string, tf.string], stateful=False)
    source.set_shape([])
    target.set_shape([])
    return {"inputs": source, "targets": target}

  return parse


@seqio.map_over_dataset
def parse_tsv_pair(line: tf.Tensor) -> dict[str, tf.Tensor]:
  """`source<TAB>target`; further columns are ignored, a line without a tab
  has no target."""
  columns = tf.concat([tf.strings.split(line, "\t"), ["", ""]], 0)
  return {"inputs": columns[0], "targets": columns[1]}


def _numbered_lines(path: tf.Tensor) -> tf.data.Dataset:
  """(line, True) for each line, then ("", False) forever."""
  lines = tf.data.TextLineDataset(path).map(lambda line: (line, True))
  return lines.concatenate(
      tf.data.Dataset.from_tensors((tf.constant(""), False)).repeat())


def read_src_tgt(src_path: tf.Tensor) -> tf.data.Dataset:
  """Line-aligned `X.src`/`X.tgt` → pairs. A file that ends before its
  partner raises `InvalidArgumentError` naming both, when reading gets there
  (the files are never counted up front: they may be large and on gs://)."""
  tgt_path = tf.strings.regex_replace(src_path, r"\.src$", ".tgt")
  both = tf.data.Dataset.zip((_numbered_lines(src_path),
                              _numbered_lines(tgt_path)))
  both = both.take_while(lambda src, tgt: tf.logical_or(src[1], tgt[1]))

  def check(src, tgt):
    same = tf.debugging.Assert(
        tf.equal(src[1], tgt[1]),
        ["Source and target files have different numbers of lines:",
         src_path, tgt_path])
    with tf.control_dependencies([same]):
      return {"inputs": tf.identity(src[0]), "targets": tf.identity(tgt[0])}

  return both.map(check)


def clean_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Replaces invalid UTF-8 with U+FFFD; drops pairs with an empty side."""

  def fix(features):
    return {key: tf.strings.unicode_transcode(
        features[key], "UTF-8", "UTF-8", errors="replace",
        replace_control_characters=False) for key in ("inputs", "targets")}

  def both_sides(features):
    return tf.reduce_all([
        tf.strings.length(tf.strings.strip(features[key])) > 0
        for key in ("inputs", "targets")])

  dataset = dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.filter(both_sides)


def drop_empty_tokens(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Drops pairs whose text tokenized to nothing (e.g. only characters the
  tokenizer's normalizer removes)."""
  return dataset.filter(lambda x: tf.logical_and(
      tf.size(x["inputs"]) > 0, tf.size(x["targets"]) > 0))


def finetuning_preprocessors(pre: Sequence[Callable] = (),
                             tokenized: Sequence[Callable] = (),
                             bos_id: Optional[int] = None) -> list[Callable]:
  """`pre` makes `inputs`/`targets` strings; `tokenized` runs on token ids,
  before the special tokens are added (`bos_id`: `<s>` before the inputs,
  None: none)."""
  return [*pre, clean_pairs, seqio.preprocessors.tokenize, drop_empty_tokens,
          *tokenized, preprocessors.add_special_tokens_after_trim(bos_id)]


@seqio.map_over_dataset
def title_from_lead(features: dict) -> dict[str, tf.Tensor]:
  """An article (`inputs`: its text) → its first paragraph and title."""
  lead = tf.strings.regex_replace(features["inputs"], r"\n(?s:.*)", "")
  return {"inputs": lead, "targets": features["targets"]}


def first_sentences(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """One example per paragraph: its first sentence (up to the first `.`,
  `!` or `?` followed by a space; the whole paragraph if there is none) as
  both `inputs` and `targets`."""

  def split(features):
    paragraphs = tf.strings.split(features["text"], "\n")
    sentences = tf.strings.regex_replace(paragraphs, r"^(.*?[.!?])\s.*$",
                                         r"\1")
    return tf.data.Dataset.from_tensor_slices(
        {"inputs": sentences, "targets": sentences})

  return dataset.flat_map(split)


def mask_tokens(mask_id: int, ratio: float) -> Callable:
  """Replaces `ratio` of the input tokens (in expectation) by `mask_id`, one
  for one. The choice is seeded by the target text, so an example is noised
  the same way on every run and every epoch. `inputs_pretokenized` is
  dropped: it would no longer describe the inputs."""

  @seqio.map_over_dataset
  def mask(features):
    tokens = features["inputs"]
    seed = tf.stack([tf.strings.to_hash_bucket_fast(
        features["targets_pretokenized"], 2**31 - 1), tf.constant(0, tf.int64)])
    chosen = tf.random.stateless_uniform(tf.shape(tokens), seed) < ratio
    kept = {k: v for k, v in features.items() if k != "inputs_pretokenized"}
    return {**kept, "inputs": tf.where(chosen, mask_id, tokens)}

  return mask
