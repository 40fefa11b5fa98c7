"""BART noising ops: exact structure on constructed token sequences."""

import math

import numpy as np
import pytest
import tensorflow as tf

from elmer_jax.data import noising

VOCAB = 100
MASK = 4
SENTENCE_END = 7
# Word starts: ids divisible by 3 (7 is not, so a '.' continues a word).
TABLES = noising.VocabTables(
    word_starts=np.arange(VOCAB) % 3 == 0,
    sentence_ends=np.arange(VOCAB) == SENTENCE_END,
    full_stops=np.arange(VOCAB) == SENTENCE_END,
    mask_id=MASK, random_low=5, random_high=VOCAB)


def _seed(i):
  return tf.constant([i, 17], tf.int64)


def _sentences(tokens):
  out, current = [], []
  for t in tokens:
    current.append(int(t))
    if t == SENTENCE_END:
      out.append(tuple(current))
      current = []
  if current:
    out.append(tuple(current))
  return out


def _document(rng, sentences=12):
  tokens = []
  for _ in range(sentences):
    tokens += list(rng.integers(8, VOCAB, rng.integers(3, 9))) + [SENTENCE_END]
  return np.array(tokens, np.int32)


def test_permutation_moves_whole_sentences():
  rng = np.random.default_rng(0)
  doc = _document(rng)
  changed = 0
  for i in range(20):
    out = noising.permute_sentences(tf.constant(doc),
                                    tf.constant(TABLES.sentence_ends), 1.0,
                                    _seed(i)).numpy()
    assert sorted(_sentences(out)) == sorted(_sentences(doc))
    changed += not np.array_equal(out, doc)
  assert changed >= 18


def test_permutation_ratio_zero_and_text_without_sentence_end():
  doc = np.array([10, 11, 12, 13], np.int32)
  same = noising.permute_sentences(tf.constant(doc),
                                   tf.constant(TABLES.sentence_ends), 1.0,
                                   _seed(0))
  np.testing.assert_array_equal(same, doc)
  rng = np.random.default_rng(1)
  doc = _document(rng)
  same = noising.permute_sentences(tf.constant(doc),
                                   tf.constant(TABLES.sentence_ends), 0.0,
                                   _seed(0))
  np.testing.assert_array_equal(same, doc)


@pytest.mark.parametrize("seed", range(6))
def test_infilling_covers_exactly_the_ratio_and_spans_become_one_mask(seed):
  rng = np.random.default_rng(seed)
  doc = _document(rng, sentences=30)
  config = noising.NoiseConfig(random_ratio=0.0)
  plan = {k: v.numpy() for k, v in noising.infilling_plan(
      tf.constant(doc), tf.constant(TABLES.word_starts), config,
      _seed(seed)).items()}
  is_start = TABLES.word_starts[doc]
  is_start[0] = True
  words = int(is_start.sum())
  assert plan["words"] == words
  assert plan["covered_words"] == math.ceil(0.3 * words)
  assert plan["lengths"].sum() == plan["covered_words"]
  assert plan["lengths"].min() >= 0
  spans = int((plan["lengths"] > 0).sum())
  assert plan["mask"].sum() == spans
  assert np.all(is_start[plan["mask"]])  # A mask replaces a word's first token.
  assert not np.any(plan["mask"] & plan["delete"])

  out = noising.apply_infilling(tf.constant(doc), plan, TABLES, config,
                                _seed(seed)).numpy()
  inserts = int((plan["lengths"] == 0).sum())
  assert (out == MASK).sum() == spans + inserts
  assert len(out) == len(doc) - plan["delete"].sum() + inserts
  # Removing the masks leaves the kept tokens in their order.
  kept = doc[~plan["delete"] & ~plan["mask"]]
  np.testing.assert_array_equal(out[out != MASK], kept)


def test_each_span_covers_whole_consecutive_words():
  rng = np.random.default_rng(9)
  doc = _document(rng, sentences=30)
  plan = {k: v.numpy() for k, v in noising.infilling_plan(
      tf.constant(doc), tf.constant(TABLES.word_starts), noising.NoiseConfig(),
      _seed(3)).items()}
  covered = plan["mask"] | plan["delete"]
  # Coverage never starts or stops inside a word.
  is_start = TABLES.word_starts[doc]
  is_start[0] = True
  changes = np.flatnonzero(np.diff(covered.astype(int))) + 1
  assert np.all(is_start[changes[changes < len(doc)]])
  # Every covered run begins with a mask token.
  run_starts = np.flatnonzero(covered & ~np.r_[False, covered[:-1]])
  assert np.all(plan["mask"][run_starts])


def test_random_replacement_uses_text_tokens():
  rng = np.random.default_rng(4)
  doc = _document(rng, sentences=40)
  config = noising.NoiseConfig(random_ratio=1.0)
  out = noising.bart_noise(tf.constant(doc), TABLES, config, _seed(1)).numpy()
  assert MASK not in out
  assert out.min() >= TABLES.random_low and out.max() < TABLES.random_high


def test_empty_and_tiny_documents():
  for doc in ([], [10], [10, 7]):
    out = noising.bart_noise(tf.constant(doc, tf.int32), TABLES,
                             noising.NoiseConfig(), _seed(0)).numpy()
    assert len(out) <= len(doc) + 1


def test_same_seed_same_noise_in_a_graph():
  rng = np.random.default_rng(5)
  doc = tf.constant(_document(rng))
  fn = tf.function(lambda s: noising.bart_noise(doc, TABLES,
                                                noising.NoiseConfig(), s))
  a, b, c = fn(_seed(1)), fn(_seed(1)), fn(_seed(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_bad_noise_config():
  with pytest.raises(ValueError, match="mask_ratio=1.5 must be in"):
    noising.NoiseConfig(mask_ratio=1.5)


def fairseq_word_mask(tokens, is_word_start, starts, lengths):
  """fairseq's DenoisingDataset.add_whole_word_mask deletion loop, written
  with NumPy for given span starts (word indices) and lengths: returns which
  tokens end up `<mask>` and which are deleted."""
  n = len(tokens)
  is_word_start = np.append(is_word_start.astype(int), 255)  # Text end.
  word_start_tokens = np.flatnonzero(is_word_start[:n])
  indices = word_start_tokens[starts]
  masked = np.zeros(n, bool)
  masked[indices] = True
  to_keep = np.ones(n, bool)
  lengths = np.array(lengths) - 1
  while indices.size:
    lengths = lengths - is_word_start[indices + 1]
    going = lengths >= 0
    indices, lengths = indices[going] + 1, lengths[going]
    to_keep[indices] = False
  return masked & to_keep, ~to_keep


def test_fairseq_mode_places_spans_as_fairseq():
  rng = np.random.default_rng(3)
  config = noising.NoiseConfig(mode="fairseq", mask_ratio=0.4)
  overlapped = 0
  for i in range(30):
    doc = _document(rng, sentences=6)
    is_start = TABLES.word_starts[doc] | (np.arange(len(doc)) == 0)
    plan = noising.infilling_plan(tf.constant(doc),
                                  tf.constant(TABLES.word_starts), config,
                                  _seed(i))
    starts, spans = plan["starts"].numpy(), plan["spans"].numpy()
    assert len(set(starts.tolist())) == len(starts)  # Distinct start words.
    mask, delete = fairseq_word_mask(doc, is_start, starts, spans)
    np.testing.assert_array_equal(plan["mask"].numpy(), mask)
    np.testing.assert_array_equal(plan["delete"].numpy(), delete)
    overlapped += int(plan["covered_words"]) < int(
        math.ceil(0.4 * int(plan["words"])))
  assert overlapped > 0  # Overlaps happen, and cover fewer words.


def test_fairseq_mode_lone_insertion_is_always_random():
  config = noising.NoiseConfig(mode="fairseq", random_ratio=0.1)
  doc = np.arange(9, 40, dtype=np.int32)
  plan = {"mask": tf.zeros([31], tf.bool), "delete": tf.zeros([31], tf.bool),
          "lengths": tf.constant([0], tf.int32)}
  for i in range(10):
    out = noising.apply_infilling(tf.constant(doc), plan, TABLES, config,
                                  _seed(i)).numpy()
    assert len(out) == 32 and MASK not in out
  with pytest.raises(ValueError, match="mode='bart'"):
    noising.NoiseConfig(mode="bart")
