"""Loading a vocabulary from a path: SentencePiece model or BART BPE files."""

import seqio
import tensorflow as tf


def load_vocabulary(path: str) -> seqio.Vocabulary:
  """A `*.model` file → SentencePiece; a directory with `vocab.json` and
  `merges.txt` (BART, RUCAIBox/elmer) → byte-level BPE. Local or gs://."""
  if path.endswith(".model"):
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"SentencePiece model {path} does not exist.")
    return seqio.SentencePieceVocabulary(path)
  if tf.io.gfile.isdir(path):
    from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
    return ByteLevelBPEVocabulary(path)
  raise FileNotFoundError(
      f"Vocabulary {path} is neither a SentencePiece '.model' file nor a "
      "directory with BART's vocab.json and merges.txt.")

