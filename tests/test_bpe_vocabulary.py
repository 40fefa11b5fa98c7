"""ByteLevelBPEVocabulary gives transformers' BartTokenizer ids, in tf.data too."""

import json

import numpy as np
import pytest
import tensorflow as tf
import transformers

import seqio

from elmer_jax.data import pipeline
from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.data.feature_converter import ElmerFeatureConverter
from elmer_jax.data.vocab_tables import special_ids, vocab_tables
from tasks import pretraining

STRINGS = [
    "Hello world.", " leading space", "trailing space ", "two  spaces",
    "Numbers 1234 and 3.14!", "café naïve résumé", "日本語のテキスト",
    "emoji 🙂 here", "line\nbreak", "", "It's, they're: (quoted) \"text\".",
]


def test_ids_match_bart_tokenizers(bpe_dir):
  vocab = ByteLevelBPEVocabulary(str(bpe_dir))
  bart = transformers.BartTokenizer(str(bpe_dir / "vocab.json"),
                                    str(bpe_dir / "merges.txt"))
  assert (bart.pad_token_id, bart.mask_token_id) == (vocab.pad_id,
                                                      vocab.mask_id)
  dataset = tf.data.Dataset.from_tensor_slices(STRINGS).map(vocab.encode_tf)
  for text, in_graph in zip(STRINGS, dataset.as_numpy_iterator()):
    expected = bart(text, add_special_tokens=False)["input_ids"]
    assert vocab.encode(text) == expected, text
    assert in_graph.tolist() == expected, text
    assert vocab.decode(expected) == text


def test_special_ids_and_word_starts(bpe_dir):
  vocab = ByteLevelBPEVocabulary(str(bpe_dir))
  size = vocab.vocab_size
  assert special_ids(vocab) == {"bos": 0, "pad": 1, "eos": 2, "unk": 3,
                                "mask": size - 1}
  tables = vocab_tables(vocab)
  word_start_tokens = [vocab.tokens()[i]
                       for i in np.flatnonzero(tables.word_starts)]
  assert word_start_tokens and all(t.startswith("Ġ") for t in word_start_tokens)
  assert tables.random_low == 4 and tables.random_high == size - 1
  assert vocab.decode(vocab.encode("A text.") + [vocab.eos_id, 7]) == "A text."


def test_invalid_utf8_does_not_crash(bpe_dir):
  vocab = ByteLevelBPEVocabulary(str(bpe_dir))
  ids = vocab.encode_tf(tf.constant(b"abc\xff\xfedef")).numpy().tolist()
  assert vocab.decode(ids) == "abc\ufffd\ufffddef"


def test_missing_files_are_named(tmp_path):
  (tmp_path / "vocab.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="merges.txt"):
    ByteLevelBPEVocabulary(str(tmp_path))
  (tmp_path / "merges.txt").write_text("")
  with pytest.raises(ValueError, match="lacks the special tokens"):
    ByteLevelBPEVocabulary(str(tmp_path))


def test_pretraining_task_with_bart_ids(bpe_dir, tmp_path):
  """The whole pipeline with BART's ids: pad 1, <s> 0, <mask> last."""
  vocab = ByteLevelBPEVocabulary(str(bpe_dir))
  docs = tmp_path / "docs.txt"
  with open(pretraining.SAMPLE_JSONL) as f:
    docs.write_text("".join(json.loads(line)["text"] + "\n"
                            for line in list(f)[:3]))  # Paragraph = document.
  name = pretraining.register_text_files_task("test_bpe_text", [str(docs)],
                                              vocabulary=vocab)
  converter = ElmerFeatureConverter(vocab.pad_id, vocab.bos_id, vocab.mask_id)
  shard = seqio.ShardInfo(0, 1)
  batch = next(pipeline.ResumableIterator({shard: pipeline.get_dataset(
      name, {"inputs": 256, "targets": 256}, "train", 8, converter, seed=0,
      shard=shard)}))
  weights = batch["decoder_loss_weights"]
  assert weights.min() == 0  # Some padding to look at.
  assert np.all(batch["decoder_target_tokens"][weights == 0] == 1)
  assert np.all(batch["decoder_input_tokens"][:, 0] == 0)
  assert np.all(batch["decoder_input_tokens"][:, 1:][weights[:, 1:] == 1]
                == vocab.mask_id)
  assert (batch["encoder_input_tokens"] == vocab.mask_id).any()
  # Encoder input `<s> ... </s>` then padding: BART's <s> (id 0, seqio's
  # padding value) stays, padding becomes <pad> (1).
  encoder = batch["encoder_input_tokens"]
  assert np.all(encoder[:, 0] == vocab.bos_id)
  assert not np.any(encoder[:, 1:] == vocab.bos_id)
  lengths = (encoder != vocab.pad_id).sum(axis=1)
  assert np.all(encoder[np.arange(8), lengths - 1] == vocab.eos_id)
  assert (lengths < 256).any()
  text = vocab.decode(batch["decoder_target_tokens"][0].tolist())
  assert text and text in docs.read_text()
