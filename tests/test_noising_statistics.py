"""Statistics of the BART noise on the bundled real Wikipedia text.

Tolerances: each document masks exactly ceil(0.3 * words) words, so the
masked fraction of word starts can only exceed 0.30 by < 1/words. Span
lengths are Poisson(3.5) with the last span of each document trimmed to hit
the word budget (a downward bias of about half a span per document, ~0.05 at
~35 spans a document) and a standard error of sqrt(3.5 / spans) ~ 0.02 over
the ~7,000 spans of 200 chunks of 512 tokens: 3.5 +/- 0.15. Random replacement is Binomial(masks,
0.1): standard error ~ 0.004 over ~6,000 masks: 0.1 +/- 0.02.
"""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf

from elmer_jax.data import noising
from elmer_jax.data.vocab_tables import vocab_tables
from tasks import pretraining

DOCUMENTS = 200


@pytest.fixture(scope="module")
def documents():
  vocab = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  tokens = []
  with open(pretraining.SAMPLE_JSONL) as f:
    for line in f:
      ids = vocab.encode(json.loads(line)["text"])
      tokens += [np.array(ids[i:i + 512], np.int32)
                 for i in range(0, len(ids) - 511, 512)]
      if len(tokens) >= DOCUMENTS:
        break
  assert len(tokens) >= DOCUMENTS
  return vocab, vocab_tables(vocab), tokens[:DOCUMENTS]


def test_infilling_statistics_on_real_text(documents):
  _, tables, docs = documents
  config = noising.NoiseConfig()
  plan_fn = tf.function(lambda t, s: noising.infilling_plan(
      t, tf.constant(tables.word_starts), config, s), reduce_retracing=True)
  covered, words, lengths = 0, 0, []
  for i, doc in enumerate(docs):
    plan = plan_fn(tf.constant(doc), tf.constant([i, 1], tf.int64))
    covered += int(plan["covered_words"])
    words += int(plan["words"])
    lengths += plan["lengths"].numpy().tolist()
    assert int(plan["covered_words"]) == int(np.ceil(0.3 * int(plan["words"])))
  assert 0.30 <= covered / words < 0.305
  assert abs(np.mean(lengths) - 3.5) < 0.15
  assert len(lengths) > 3000


def test_random_replacement_share(documents):
  _, tables, docs = documents
  config = noising.NoiseConfig(permute_ratio=0.0)

  @tf.function(reduce_retracing=True)
  def noise(tokens, seed):
    plan_seed, apply_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    plan = noising.infilling_plan(tokens, tf.constant(tables.word_starts),
                                  config, plan_seed)
    return plan["lengths"], noising.apply_infilling(tokens, plan, tables,
                                                    config, apply_seed)

  slots = masks = 0
  for i, doc in enumerate(docs):
    lengths, noised = noise(tf.constant(doc), tf.constant([i, 2], tf.int64))
    # Every span and every insertion leaves one slot: <mask> or random.
    slots += int(tf.size(lengths))
    masks += int((noised.numpy() == tables.mask_id).sum())
  assert slots > 3000
  assert abs((slots - masks) / slots - 0.1) < 0.02


def test_noised_text_is_readable_and_shorter(documents):
  vocab, tables, docs = documents
  noised = noising.bart_noise(tf.constant(docs[0]), tables,
                              noising.NoiseConfig(),
                              tf.constant([7, 7], tf.int64)).numpy()
  text = vocab.decode(noised.tolist())
  assert vocab.tokenizer.id_to_piece(tables.mask_id) == "<mask>"
  assert len(noised) < len(docs[0])
  assert len(text) > 100


def test_fairseq_mode_covers_fewer_words_and_ends_sentences_at_full_stops(
    documents):
  vocab, tables, docs = documents
  stops = [vocab.tokenizer.id_to_piece(int(i))
           for i in np.flatnonzero(tables.full_stops)]
  assert stops == ["."]
  assert tables.sentence_ends.sum() > 1  # The exact mode's ends are wider.
  config = noising.NoiseConfig(mode="fairseq")
  plan_fn = tf.function(lambda t, s: noising.infilling_plan(
      t, tf.constant(tables.word_starts), config, s), reduce_retracing=True)
  covered = words = 0
  for i, doc in enumerate(docs[:50]):
    plan = plan_fn(tf.constant(doc), tf.constant([i, 1], tf.int64))
    covered += int(plan["covered_words"])
    words += int(plan["words"])
  # Overlapping spans: clearly below the 30% budget, well above nothing.
  assert 0.15 < covered / words < 0.29
