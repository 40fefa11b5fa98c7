"""BART's byte-level BPE (`vocab.json` + `merges.txt`) as a seqio Vocabulary.

The ids are those of transformers' `BartTokenizer` for the same files:
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 and `<mask>` last (50264 in BART's
own vocabulary). seqio assumes pad id 0; this vocabulary reports BART's real
pad id, and `ElmerFeatureConverter` pads with it.

Inside tf.data, encoding runs the Rust `tokenizers` BPE through
`tf.numpy_function`: tokenization is not the noising hot path, and a
byte-level BPE with 50k merges has no TF-graph implementation to reuse.
"""

import json
import os
from typing import Iterable, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf
import tokenizers

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


class ByteLevelBPEVocabulary(seqio.Vocabulary):
  """GPT-2/BART byte-level BPE from `vocab.json` and `merges.txt`."""

  def __init__(self, vocab_dir: Optional[str] = None, *,
               vocab_file: Optional[str] = None,
               merges_file: Optional[str] = None):
    self._vocab_file = vocab_file or os.path.join(vocab_dir, "vocab.json")
    self._merges_file = merges_file or os.path.join(vocab_dir, "merges.txt")
    for path in (self._vocab_file, self._merges_file):
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"BPE vocabulary file {path} does not exist.")
    with tf.io.gfile.GFile(self._vocab_file) as f:
      self._token_to_id = json.load(f)
    missing = [s for s in SPECIALS if s not in self._token_to_id]
    if missing:
      raise ValueError(f"{self._vocab_file} lacks the special tokens "
                       f"{missing}; BART vocabularies have {SPECIALS}.")
    self._tokens = [""] * len(self._token_to_id)
    for token, i in self._token_to_id.items():
      self._tokens[i] = token
    self._tokenizer = None
    super().__init__(extra_ids=0)

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    if self._tokenizer is None:
      with tf.io.gfile.GFile(self._merges_file) as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")
                  if line and not line.startswith("#version")]
      tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(
          vocab=dict(self._token_to_id), merges=merges))
      tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
          add_prefix_space=False)
      tokenizer.decoder = tokenizers.decoders.ByteLevel()
      self._tokenizer = tokenizer
    return self._tokenizer

  @property
  def vocab_file(self) -> str:
    return self._vocab_file

  @property
  def merges_file(self) -> str:
    return self._merges_file

  def tokens(self) -> Sequence[str]:
    """Each id's byte-level token; a word start begins with 'Ġ' (a space)."""
    return self._tokens

  @property
  def bos_id(self) -> int:
    return self._token_to_id["<s>"]

  @property
  def pad_id(self) -> int:
    return self._token_to_id["<pad>"]

  @property
  def eos_id(self) -> int:
    return self._token_to_id["</s>"]

  @property
  def unk_id(self) -> int:
    return self._token_to_id["<unk>"]

  @property
  def mask_id(self) -> int:
    return self._token_to_id["<mask>"]

  @property
  def _base_vocab_size(self) -> int:
    return len(self._tokens)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Iterable[int]) -> str:
    specials = {self.bos_id, self.pad_id, self.eos_id}
    return self.tokenizer.decode([i for i in ids if i not in specials],
                                 skip_special_tokens=False)

  def _encode_bytes(self, text) -> np.ndarray:
    """For tf.numpy_function: `text` is bytes, or a 0-d array of them."""
    if isinstance(text, np.ndarray):
      text = text.item()
    return np.asarray(self._encode(text.decode("utf-8", errors="replace")),
                      np.int32)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.numpy_function(self._encode_bytes, [s], tf.int32,
                            stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    text = tf.numpy_function(
        lambda x: self._decode(x.tolist()).encode("utf-8"), [ids], tf.string,
        stateful=False)
    text.set_shape([])
    return text

  def __eq__(self, other) -> bool:
    return (isinstance(other, ByteLevelBPEVocabulary)
            and self._token_to_id == other._token_to_id
            and self._merges_file == other._merges_file)

  def __hash__(self) -> int:
    return hash((self._vocab_file, self._merges_file))
