"""BART's noising (sentence permutation, text infilling) as vectorized TF ops.

Everything works on token ids of one example with stateless seeds, so it runs
inside `tf.data` (seqio's `map_over_dataset(num_seeds=...)`) with no Python on
the hot path and gives the same output for the same seed. Word starts and
sentence ends come from per-vocabulary lookup tables (`vocab_tables.py`).

Text infilling follows BART: `mask_ratio` of the words are covered by spans
whose lengths are Poisson(`poisson_lambda`); each span of k >= 1 words becomes
one `<mask>` (10% of them a random token instead), a zero-length span inserts
a `<mask>`. Spans are placed without overlap, so exactly
ceil(mask_ratio * words) words are covered (`mode='exact'`, the default).

`mode='fairseq'` makes the noise as the released code's fairseq
`DenoisingDataset` does: spans start at distinct, uniformly drawn words and
may overlap (a span that runs over another's start deletes that `<mask>`),
so fewer words end up covered; of the inserted masks ceil(10%) are random
tokens (a lone insertion always is); sentences end only at the `.` token.
"""

import dataclasses
from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

NOISE_MODES = ("exact", "fairseq")


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
  """BART's pretraining noise; defaults are the BART/ELMER settings."""

  mask_ratio: float = 0.3
  poisson_lambda: float = 3.5
  random_ratio: float = 0.1
  permute_ratio: float = 1.0
  mode: str = "exact"  # Or "fairseq", the released code's noise.

  def __post_init__(self):
    if self.mode not in NOISE_MODES:
      raise ValueError(f"NoiseConfig.mode={self.mode!r}; expected one of "
                       f"{NOISE_MODES}.")
    for name in ("mask_ratio", "random_ratio", "permute_ratio"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"NoiseConfig.{name}={getattr(self, name)} must be "
                         "in [0, 1].")
    if self.poisson_lambda <= 0:
      raise ValueError(f"NoiseConfig.poisson_lambda={self.poisson_lambda} "
                       "must be > 0.")


@dataclasses.dataclass(frozen=True)
class VocabTables:
  """What noising needs to know about a vocabulary."""

  word_starts: np.ndarray  # bool[vocab]: the token begins a word.
  sentence_ends: np.ndarray  # bool[vocab]: the token ends a sentence.
  full_stops: np.ndarray  # bool[vocab]: the token is `.` (fairseq's ends).
  mask_id: int
  random_low: int  # Random replacements are drawn from [low, high).
  random_high: int


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def _shuffled_range(n: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """A uniformly random permutation of 0..n-1."""
  return tf.argsort(tf.random.stateless_uniform([n], seed))


def permute_sentences(tokens: tf.Tensor, sentence_ends: tf.Tensor,
                      ratio: float, seed: tf.Tensor) -> tf.Tensor:
  """Shuffles ceil(ratio * sentences) of the sentences among themselves.

  A sentence ends at a token whose id is marked in `sentence_ends` (or at the
  end of the text); tokens keep their order inside a sentence.
  """
  n = tf.size(tokens)
  ends = tf.gather(sentence_ends, tokens)
  # A token follows the end of the previous sentence: its sentence id is the
  # number of ends strictly before it.
  sentence = tf.cumsum(tf.cast(ends, tf.int32), exclusive=True)
  count = tf.reduce_max(tf.concat([sentence, [-1]], 0)) + 1
  num_permuted = tf.cast(tf.math.ceil(tf.cast(count, tf.float64) * ratio),
                         tf.int32)
  subset_seed, order_seed = _seeds(seed, 2)
  chosen = _shuffled_range(count, subset_seed)[:num_permuted]
  moved = tf.gather(chosen, _shuffled_range(num_permuted, order_seed))
  # ordering[i]: the sentence written i-th; rank is its inverse.
  ordering = tf.tensor_scatter_nd_update(tf.range(count), chosen[:, None],
                                         moved)
  rank = tf.tensor_scatter_nd_update(tf.zeros([count], tf.int32),
                                     ordering[:, None], tf.range(count))
  key = tf.gather(rank, sentence) * (n + 1) + tf.range(n)
  return tf.gather(tokens, tf.argsort(key))


def infilling_plan(tokens: tf.Tensor, word_starts: tf.Tensor,
                   config: NoiseConfig,
                   seed: tf.Tensor) -> Mapping[str, tf.Tensor]:
  """Decides the text-infilling noise for `tokens`; `apply_infilling` applies it.

  Returns per-token `mask` (the token becomes a `<mask>`) and `delete`, the
  span `lengths` in words (zero = insertion), the placed spans (`starts`,
  `spans`), the number of `words` and of `covered_words`. Kept apart from applying it so the statistics of the noise
  can be checked on real text.
  """
  n = tf.size(tokens)
  is_start = tf.gather(word_starts, tokens) | (tf.range(n) == 0)
  word = tf.cumsum(tf.cast(is_start, tf.int32)) - 1
  words = tf.reduce_sum(tf.cast(is_start, tf.int32))
  to_cover = tf.cast(
      tf.math.ceil(tf.cast(words, tf.float64) * config.mask_ratio), tf.int32)

  length_seed, slot_seed, order_seed = _seeds(seed, 3)
  # Enough draws that their sum reaches `to_cover` but for odds of ~1e-12.
  draws = tf.random.stateless_poisson([to_cover + 8], length_seed,
                                      config.poisson_lambda, dtype=tf.int32)
  total = tf.cumsum(draws)
  reached = total >= to_cover
  num_spans = tf.where(
      tf.reduce_any(reached),
      tf.argmax(tf.cast(reached, tf.int32), output_type=tf.int32) + 1,
      tf.size(draws))
  num_spans = tf.where(to_cover > 0, num_spans, 0)
  lengths = draws[:num_spans]
  # Trim the last span so that the lengths add up to exactly `to_cover`.
  before_last = tf.reduce_sum(lengths[:-1])
  lengths = tf.concat([lengths[:-1], [to_cover - before_last]], 0)[:num_spans]

  spans = tf.boolean_mask(lengths, lengths > 0)
  spans = tf.gather(spans, _shuffled_range(tf.size(spans), order_seed))
  num_real = tf.size(spans)
  if config.mode == "fairseq":
    # Distinct uniformly drawn start words; spans may overlap and stop at
    # the end of the text.
    starts = _shuffled_range(words, slot_seed)[:num_real]
    ends = tf.minimum(starts + spans, words)
  else:
    # Non-overlapping placement: lay out the spans (random order) among the
    # uncovered words; a span's start is its slot plus the words of the
    # spans placed before it.
    items = words - tf.reduce_sum(spans) + num_real
    slots = tf.sort(_shuffled_range(items, slot_seed)[:num_real])
    starts = slots + tf.cumsum(spans - 1, exclusive=True)
    ends = starts + spans

  boundary = (tf.math.unsorted_segment_sum(tf.ones_like(starts), starts,
                                           words + 1)
              - tf.math.unsorted_segment_sum(tf.ones_like(ends), ends,
                                             words + 1))
  spans_over = tf.cumsum(boundary)[:words]  # Spans covering each word.
  covered_word = spans_over > 0
  span_start = tf.math.unsorted_segment_sum(
      tf.ones_like(starts), starts, words + 1)[:words]
  # A start stays a <mask> unless another span runs over it (fairseq).
  kept_start_word = (span_start > 0) & (spans_over - span_start == 0)
  covered = tf.gather(covered_word, word)
  mask = tf.gather(kept_start_word, word) & is_start
  return {
      "mask": mask,
      "delete": covered & ~mask,
      "lengths": lengths,
      "starts": starts,  # Start word of each span of >= 1 word ...
      "spans": spans,  # ... and its length in words.
      "words": words,
      "covered_words": tf.reduce_sum(tf.cast(covered_word, tf.int32)),
  }


def _mask_or_random(shape, tables: VocabTables, ratio: float,
                    seed: tf.Tensor) -> tf.Tensor:
  """`<mask>` ids, each replaced by a random token with probability `ratio`."""
  pick_seed, token_seed = _seeds(seed, 2)
  random_tokens = tf.random.stateless_uniform(
      shape, token_seed, tables.random_low, tables.random_high, tf.int32)
  use_random = tf.random.stateless_uniform(shape, pick_seed) < ratio
  return tf.where(use_random, random_tokens, tables.mask_id)


def apply_infilling(tokens: tf.Tensor, plan: Mapping[str, tf.Tensor],
                    tables: VocabTables, config: NoiseConfig,
                    seed: tf.Tensor) -> tf.Tensor:
  """Spans → one `<mask>` each, then zero-length spans as inserted masks."""
  replace_seed, insert_seed, place_seed = _seeds(seed, 3)
  masks = _mask_or_random(tf.shape(tokens), tables, config.random_ratio,
                          replace_seed)
  kept = tf.boolean_mask(tf.where(plan["mask"], masks, tokens),
                         ~plan["delete"])
  inserts = tf.reduce_sum(tf.cast(plan["lengths"] == 0, tf.int32))
  total = tf.size(kept) + inserts
  places = _shuffled_range(total, place_seed)[:inserts]
  at = tf.math.unsorted_segment_sum(tf.ones([inserts], tf.int32), places,
                                    total) > 0
  source = tf.maximum(tf.cumsum(tf.cast(~at, tf.int32)) - 1, 0)
  if config.mode == "fairseq":
    # fairseq's add_insertion_noise: the first ceil(ratio * n) are random.
    num_random = tf.cast(tf.math.ceil(
        tf.cast(inserts, tf.float64) * config.random_ratio), tf.int32)
    random_at = tf.math.unsorted_segment_sum(
        tf.ones([num_random], tf.int32), places[:num_random], total) > 0
    inserted = tf.where(random_at, _mask_or_random(
        [total], tables, 1.0, insert_seed), tables.mask_id)
  else:
    inserted = _mask_or_random([total], tables, config.random_ratio,
                               insert_seed)
  return tf.where(at, inserted, tf.gather(tf.concat([kept, [0]], 0), source))


def bart_noise(tokens: tf.Tensor, tables: VocabTables, config: NoiseConfig,
               seed: tf.Tensor) -> tf.Tensor:
  """Sentence permutation, then text infilling, of one token sequence."""
  permute_seed, plan_seed, apply_seed = _seeds(seed, 3)
  sentence_ends = tf.constant(tables.full_stops if config.mode == "fairseq"
                              else tables.sentence_ends)
  word_starts = tf.constant(tables.word_starts)
  if config.permute_ratio > 0:
    tokens = permute_sentences(tokens, sentence_ends, config.permute_ratio,
                               permute_seed)
  plan = infilling_plan(tokens, word_starts, config, plan_seed)
  return apply_infilling(tokens, plan, tables, config, apply_seed)


def denoising_preprocessor(tables: VocabTables, config: NoiseConfig,
                           source_key: str = "targets",
                           output_key: str = "inputs"):
  """A seqio preprocessor: `output_key` = bart_noise(`source_key`).

  The source (the original text) stays as the target. Seeds come from seqio,
  so a dataset built with a fixed seed is reproducible.
  """

  @seqio.map_over_dataset(num_seeds=1)
  def bart_denoise(features, seed):
    features = dict(features)
    features[output_key] = bart_noise(features[source_key], tables, config,
                                      seed)
    return features

  return bart_denoise
