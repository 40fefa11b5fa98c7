"""The run's vocabulary as one path: load it, copy it into a run, derive the
model's vocabulary size and special ids from it.

A path is either a SentencePiece `.model` file or a folder with BART's
`vocab.json` + `merges.txt`. The vocabulary also carries how encoder inputs
are built (`encoder_bos`): `<s> tokens </s>` as BART and the released ELMER
do (the default), or `tokens </s>`.
"""

import os
from typing import Optional, Sequence

import seqio
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.data.vocab_tables import special_ids
from elmer_jax.model.config import ElmerConfig

BPE_FILES = ("vocab.json", "merges.txt")
# Where a run keeps its copy of the vocabulary.
RUN_SUBDIR = "vocabulary"


def encoder_bos(vocabulary: seqio.Vocabulary) -> bool:
  """Whether encoder inputs start with `<s>` (default: yes, as BART)."""
  return getattr(vocabulary, "encoder_bos", True)


def _check_sentencepiece(path: str) -> None:
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  proto = sentencepiece_model_pb2.ModelProto()
  try:
    proto.ParseFromString(data)
  except Exception as e:  # protobuf raises DecodeError and friends.
    raise ValueError(f"VOCABULARY={path!r} is not a SentencePiece model "
                     f"({type(e).__name__}: {e}); expected a .model file "
                     "written by `python -m elmer_jax.data.train_vocab`.") from e
  if not proto.pieces:
    raise ValueError(f"VOCABULARY={path!r} is not a SentencePiece model (no "
                     "pieces); expected a .model file written by "
                     "`python -m elmer_jax.data.train_vocab`.")


def files(path: str) -> list[str]:
  """The files that make up the vocabulary at `path` (checked to exist)."""
  if tf.io.gfile.isdir(path):
    found = [os.path.join(path, name) for name in BPE_FILES]
    missing = [name for name, full in zip(BPE_FILES, found)
               if not tf.io.gfile.exists(full)]
    if missing:
      raise FileNotFoundError(
          f"VOCABULARY={path!r} is a folder without {' and '.join(missing)}; "
          "a BART byte-level BPE vocabulary needs vocab.json and merges.txt.")
    return found
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"VOCABULARY={path!r} does not exist: it is neither a SentencePiece "
        "'.model' file nor a folder with vocab.json and merges.txt.")
  if os.path.basename(path) in BPE_FILES:
    raise ValueError(f"VOCABULARY={path!r} names one BPE file; name the "
                     "folder that holds vocab.json and merges.txt.")
  return [path]


def load_vocabulary(path: str, encoder_bos: bool = True) -> seqio.Vocabulary:
  """A `*.model` file → SentencePiece; a folder with `vocab.json` and
  `merges.txt` (BART, RUCAIBox/elmer) → byte-level BPE. Local or gs://;
  errors name what is wrong."""
  paths = files(path)
  if len(paths) == 2:
    vocabulary = ByteLevelBPEVocabulary(path)
  else:
    _check_sentencepiece(path)
    vocabulary = seqio.SentencePieceVocabulary(path)
  vocabulary.encoder_bos = encoder_bos
  special_ids(vocabulary)  # Raises if `<mask>` is missing.
  return vocabulary


def copy_into(path: str, run_dir: str) -> str:
  """Copies the vocabulary into `run_dir/vocabulary/`; returns the path of
  the copy (same kind as `path`). A copy already there is kept."""
  paths = files(path)
  target_dir = os.path.join(run_dir, RUN_SUBDIR)
  tf.io.gfile.makedirs(target_dir)
  for source in paths:
    target = os.path.join(target_dir, os.path.basename(source))
    if os.path.abspath(source) != os.path.abspath(target):
      tf.io.gfile.copy(source, target, overwrite=True)
  return target_dir if len(paths) == 2 else os.path.join(
      target_dir, os.path.basename(paths[0]))


def run_copy(run_dir: str) -> Optional[str]:
  """The vocabulary copied into `run_dir`, if there is one."""
  target_dir = os.path.join(run_dir, RUN_SUBDIR)
  if not tf.io.gfile.isdir(target_dir):
    return None
  if all(tf.io.gfile.exists(os.path.join(target_dir, n)) for n in BPE_FILES):
    return target_dir
  models = [n for n in tf.io.gfile.listdir(target_dir) if n.endswith(".model")]
  return os.path.join(target_dir, models[0]) if len(models) == 1 else None


def model_fields(vocabulary: seqio.Vocabulary) -> dict[str, int]:
  """The ElmerConfig fields the vocabulary decides."""
  ids = special_ids(vocabulary)
  return {"vocab_size": vocabulary.vocab_size,
          **{f"{name}_id": value for name, value in ids.items()}}


def output_text(vocabulary: seqio.Vocabulary, ids: Sequence[int],
                config: ElmerConfig) -> str:
  """The text of decoded ids without the model's special tokens (`<s>`,
  `<pad>`, `</s>`, `<unk>`, `<mask>`), as the released test code and
  `tokenizer.batch_decode(..., skip_special_tokens=True)` of an export show
  it: an undertrained model's `<mask>` predictions are not text."""
  specials = {config.bos_id, config.pad_id, config.eos_id, config.unk_id,
              config.mask_id}
  return vocabulary.decode([i for i in ids if i not in specials])
