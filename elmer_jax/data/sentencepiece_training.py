"""Training SentencePiece vocabularies with the special ids ELMER needs.

Ids, recorded in the model: <pad>=0 (seqio's pad), </s>=1, <unk>=2, <s>=3,
<mask>=4. SentencePiece silently skips input lines longer than
`max_sentence_length` (4,192 bytes), so documents are fed as sentences.
"""

import json
import os
import re
from typing import Iterable, Iterator, Sequence

import seqio
import sentencepiece as spm
import tensorflow as tf

SPECIAL_IDS = {"pad": 0, "eos": 1, "unk": 2, "bos": 3, "mask": 4}
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_MAX_LINE_BYTES = 4000


def sentences(documents: Iterable[str]) -> Iterator[str]:
  """Paragraphs split into sentences short enough for SentencePiece."""
  for document in documents:
    for paragraph in document.split("\n"):
      for sentence in _SENTENCE_BREAK.split(paragraph.strip()):
        if sentence and len(sentence.encode("utf-8")) <= _MAX_LINE_BYTES:
          yield sentence


def read_documents(paths: Sequence[str], input_format: str = "text",
                   text_field: str = "text") -> Iterator[str]:
  """Documents from text files (one per line) or JSONL files; a line that is
  not UTF-8 (or not JSON with `text_field`) is an error naming the file and
  the line's byte offset."""
  for path in paths:
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"Input file {path} does not exist.")
    with tf.io.gfile.GFile(path, "rb") as f:
      offset = 0
      for raw in f:
        yield _document(raw, path, offset, input_format, text_field)
        offset += len(raw)


def _document(raw: bytes, path: str, offset: int, input_format: str,
              text_field: str) -> str:
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(
        f"{path}: the line at byte offset {offset} is not UTF-8 (byte "
        f"{offset + e.start}: {raw[e.start:e.start + 4]!r}); re-encode the "
        "file as UTF-8.") from None
  if input_format != "jsonl":
    return line
  try:
    return json.loads(line)[text_field]
  except (json.JSONDecodeError, KeyError, TypeError):
    raise ValueError(
        f"{path}: the line at byte offset {offset} is not a JSON object with "
        f"a {text_field!r} field: {line[:80]!r} (--text_field names the field; "
        "--input_format=text reads plain text).") from None


def task_documents(task_name: str, split: str = "train",
                   max_documents: int = 100_000) -> Iterator[str]:
  """A seqio task's documents as they enter tokenization (after its parsing
  and cleaning steps), so the vocabulary sees exactly the text it will cut."""
  task = seqio.get_mixture_or_task(task_name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{task_name} is a mixture; name one of its tasks.")
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for step in task.preprocessors:
    if step is seqio.preprocessors.tokenize:
      break
    dataset = step(dataset)
  for example in dataset.take(max_documents).as_numpy_iterator():
    yield example["targets"].decode("utf-8")


def train_sentencepiece(documents: Iterable[str], model_prefix: str,
                        vocab_size: int) -> str:
  """Trains a unigram model on `documents`; returns the `.model` path
  (creating its folder)."""
  folder = os.path.dirname(model_prefix)
  if folder:
    tf.io.gfile.makedirs(folder)
  spm.SentencePieceTrainer.train(
      sentence_iterator=sentences(documents), model_prefix=model_prefix,
      vocab_size=vocab_size, model_type="unigram",
      pad_id=SPECIAL_IDS["pad"], eos_id=SPECIAL_IDS["eos"],
      unk_id=SPECIAL_IDS["unk"], bos_id=SPECIAL_IDS["bos"],
      pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", bos_piece="<s>",
      user_defined_symbols=["<mask>"], byte_fallback=True,
      character_coverage=0.9995, num_threads=1, minloglevel=2)
  path = model_prefix + ".model"
  special_ids(path)
  return path


def special_ids(model_path: str) -> dict[str, int]:
  """The special ids of a trained model; raises if they are not ELMER's."""
  sp = spm.SentencePieceProcessor(model_file=model_path)
  found = {"pad": sp.pad_id(), "eos": sp.eos_id(), "unk": sp.unk_id(),
           "bos": sp.bos_id(), "mask": sp.piece_to_id("<mask>")}
  for name, expected in SPECIAL_IDS.items():
    if found[name] != expected:
      raise ValueError(f"SentencePiece model {model_path} has {name} id "
                       f"{found[name]}; ELMER's vocabularies use {expected}.")
  return found
