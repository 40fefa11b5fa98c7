"""Generation metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from elmer_jax import metrics

_REF = "the cat sat on the mat"


def test_rouge_by_hand_uses_stemming():
  # "cats" stems to "cat": unigram overlap {the, cat, sat} = 3 of 4 predicted
  # and 6 reference tokens; bigrams {the cat, cat sat} = 2 of 3 and 5;
  # the LCS "the cat sat" has 3 tokens. Without stemming ROUGE-1 would be 40.
  scores = metrics.rouge(["The cats sat down."], [_REF])
  f = lambda p, r: 200 * p * r / (p + r)
  assert scores["rouge1"] == pytest.approx(f(3 / 4, 3 / 6))  # 60
  assert scores["rouge2"] == pytest.approx(f(2 / 3, 2 / 5))  # 50
  assert scores["rougeL"] == pytest.approx(f(3 / 4, 3 / 6))


def test_rouge_l_differs_from_rouge_1_and_examples_are_averaged():
  # "mat the cat": all 3 unigrams match, but the LCS is "the cat" (2).
  scores = metrics.rouge(["mat the cat", _REF], [_REF, _REF])
  f = lambda p, r: 200 * p * r / (p + r)
  assert scores["rouge1"] == pytest.approx((f(3 / 3, 3 / 6) + 100) / 2)
  assert scores["rouge2"] == pytest.approx((f(1 / 2, 1 / 5) + 100) / 2)
  assert scores["rougeL"] == pytest.approx((f(2 / 3, 2 / 6) + 100) / 2)


def test_bleu_identical_is_100():
  assert metrics.bleu([_REF, "a b c d e"], [_REF, "a b c d e"]) == (
      pytest.approx(100.0))


def test_bleu_by_hand():
  # Clipped n-gram precisions of "the cat sat on the mat" against "the cat
  # sat on a mat": 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
  assert metrics.bleu([_REF], ["the cat sat on a mat"]) == pytest.approx(
      100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3)**0.25)


def test_bleu_brevity_penalty_by_hand():
  # All precisions 1; 4 predicted vs 6 reference tokens: BP = exp(1 - 6/4).
  assert metrics.bleu(["the cat sat on"], [_REF]) == pytest.approx(
      100 * math.exp(1 - 6 / 4))


def test_distinct_by_hand():
  predictions = ["the cat the cat", "a cat"]
  # Unigrams: the cat the cat a cat -> 3 unique of 6.
  assert metrics.distinct(predictions, 1) == pytest.approx(50.0)
  # Bigrams: (the cat) (cat the) (the cat) (a cat) -> 3 unique of 4; none
  # spans the two predictions.
  assert metrics.distinct(predictions, 2) == pytest.approx(75.0)


def test_empty_prediction_scores_zero_and_counts_for_brevity():
  scores = metrics.compute_metrics(["", _REF], ["a b c", _REF])
  assert set(scores) == {"rouge1", "rouge2", "rougeL", "bleu", "distinct1",
                         "distinct2"}
  for name in ("rouge1", "rouge2", "rougeL"):
    assert scores[name] == pytest.approx(50.0)
  # Matches only from the identical pair (precisions 1), but the empty
  # prediction's reference adds 3 tokens: BP = exp(1 - 9/6).
  assert scores["bleu"] == pytest.approx(100 * math.exp(1 - 9 / 6))
  assert scores["distinct1"] == pytest.approx(100 * 5 / 6)  # "the" twice
  assert scores["distinct2"] == pytest.approx(100.0)


def test_all_empty_predictions_score_zero():
  scores = metrics.compute_metrics(["", " "], [_REF, "a b"])
  assert scores == {name: 0.0 for name in scores}


@pytest.mark.parametrize("predictions,references,message", [
    (["a"], ["a", "b"], "1 predictions but 2 references"),
    ([], [], "No predictions"),
])
def test_compute_metrics_rejects_bad_input(predictions, references, message):
  with pytest.raises(ValueError, match=message):
    metrics.compute_metrics(predictions, references)


def test_exit_helpers_by_hand():
  exits = np.array([[0, 2, 1], [2, 2, 0]])
  mask = np.array([[1, 1, 1], [1, 0, 0]])
  # Valid exits 0, 2, 1, 2: mean 1.25; layer passes 1, 3, 2, 3 of 3 each.
  assert metrics.average_exit_layer(exits, mask) == pytest.approx(1.25)
  assert metrics.fraction_decoder_layers_saved(exits, mask, 3) == (
      pytest.approx(1 - 9 / 12))
  assert metrics.fraction_decoder_layers_saved(
      np.full((2, 3), 2), mask, 3) == 0.0


def test_exit_helpers_reject_bad_input():
  mask = np.ones((1, 2), bool)
  with pytest.raises(ValueError, match="expected 0..2 for 3 layers"):
    metrics.fraction_decoder_layers_saved(np.array([[0, 3]]), mask, 3)
  with pytest.raises(ValueError, match="same"):
    metrics.average_exit_layer(np.zeros((2, 2)), mask)
  with pytest.raises(ValueError, match="no tokens"):
    metrics.average_exit_layer(np.zeros((1, 2)), ~mask)
