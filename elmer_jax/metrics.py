"""Text-generation metrics for evaluation, and what early exit saves.

Scores are on a 0-100 scale, as papers (ELMER's included) report them:

- `rouge1`, `rouge2`, `rougeL`: F-measure of Google's `rouge-score` with the
  Porter stemmer, as is standard for XSUM (and as ELMER's XSUM figures use),
  averaged over examples. `rougeL` is sentence-level LCS (not `rougeLsum`).
  `rouge-score` lowercases and keeps only [a-z0-9] tokens.
- `bleu`: sacreBLEU corpus BLEU-4 (13a tokenizer, exponential smoothing,
  brevity penalty over the corpus), one reference per prediction.
- `distinct1`, `distinct2`: unique n-grams / total n-grams over all
  predictions together, with whitespace tokens as they are (no lowercasing).

An empty prediction is a legal output of a decoder (a `</s>` in the first
slot): it scores 0 ROUGE, adds no n-grams to BLEU's matches but counts
toward the reference length (so the brevity penalty punishes it), and adds
no n-grams to distinct-n. If no prediction has an n-gram at all, distinct-n
is 0.
"""

from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer
import sacrebleu

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: Sequence[str],
          references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1/2/L F-measure (x100) with stemming."""
  scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
  totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
  for prediction, reference in zip(predictions, references, strict=True):
    # score(target, prediction): the reference comes first.
    scores = scorer.score(reference, prediction)
    for name in _ROUGE_TYPES:
      totals[name] += scores[name].fmeasure
  return {name: 100.0 * total / len(predictions)
          for name, total in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
  """sacreBLEU corpus BLEU-4 with its default (13a) tokenization."""
  return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def distinct(predictions: Sequence[str], n: int) -> float:
  """Unique n-grams / all n-grams (x100) over the whole set of predictions."""
  ngrams = []
  for prediction in predictions:
    words = prediction.split()
    ngrams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
  return 100.0 * len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def compute_metrics(predictions: list[str],
                    references: list[str]) -> dict[str, float]:
  """ROUGE-1/2/L, BLEU-4 and distinct-1/2 of predictions against references."""
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} "
                     "references; expected one reference per prediction.")
  if not predictions:
    raise ValueError("No predictions to score.")
  return {
      **rouge(predictions, references),
      "bleu": bleu(predictions, references),
      "distinct1": distinct(predictions, 1),
      "distinct2": distinct(predictions, 2),
  }


def _valid_exits(exit_layers, mask) -> np.ndarray:
  exit_layers = np.asarray(exit_layers)
  mask = np.asarray(mask, dtype=bool)
  if exit_layers.shape != mask.shape:
    raise ValueError(f"exit_layers has shape {exit_layers.shape} but mask "
                     f"{mask.shape}; expected the same (batch, length).")
  if not mask.any():
    raise ValueError("The mask selects no tokens.")
  return exit_layers[mask]


def average_exit_layer(exit_layers: np.ndarray, mask: np.ndarray) -> float:
  """Mean 0-based exit layer over valid tokens (as `objectives.summarize`)."""
  return float(np.mean(_valid_exits(exit_layers, mask)))


def fraction_decoder_layers_saved(exit_layers: np.ndarray, mask: np.ndarray,
                          num_layers: int) -> float:
  """Fraction of decoder-layer passes that early exit skips.

  A token exiting at 0-based layer e has passed through e + 1 of the
  `num_layers` decoder layers, so the saving is 1 - mean(e + 1) / num_layers
  over valid tokens: 0 when every token runs all layers. It counts per-token
  layer passes (projections and FFN, which dominate at short lengths); an
  exited token still serves as key and value to the tokens above it, so
  attention over it is not saved. Multiply by the decoder layers' share of
  `flops.forward_flops` for absolute FLOPs.
  """
  exits = _valid_exits(exit_layers, mask)
  if exits.min() < 0 or exits.max() >= num_layers:
    raise ValueError(f"Exit layers span [{exits.min()}, {exits.max()}]; "
                     f"expected 0..{num_layers - 1} for {num_layers} layers.")
  return float(1.0 - np.mean(exits + 1) / num_layers)
