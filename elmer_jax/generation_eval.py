"""Generation quality on a task split: decode every example, score the texts.

Inputs come from the task as the model saw them in fine-tuning (tokenized,
trimmed, `<s> … </s>` as BART); references are the raw target strings the task
keeps (`targets_pretokenized`), else the decoded target ids. Scores: ROUGE,
BLEU, distinct-n (`elmer_jax.metrics`), the average exit layer and the share
of decoder-layer passes early exit saved.
"""

import dataclasses
from typing import Any, Optional

import seqio

from elmer_jax import decoding, metrics
from elmer_jax.data import vocabularies
from elmer_jax.model.config import ElmerConfig


@dataclasses.dataclass(frozen=True)
class GenerationEvalConfig:
  """What to decode and how. None: take the value from the run
  (`TrainConfig.mixture_or_task` / `encoder_length`)."""

  mixture_or_task: Optional[str] = None
  split: str = "validation"
  max_examples: Optional[int] = None
  batch_size: int = 32
  encoder_length: Optional[int] = None
  decode: decoding.DecodeConfig = decoding.DecodeConfig()


def read_examples(task_name: str, split: str, encoder_length: int,
                  decoder_length: int, max_examples: Optional[int] = None
                  ) -> list[dict[str, Any]]:
  """Input ids, reference text and reference length (with `</s>`) of each
  example, in the split's order."""
  task = seqio.get_mixture_or_task(task_name)
  dataset = task.get_dataset(
      {"inputs": encoder_length, "targets": decoder_length}, split=split,
      shuffle=False, num_epochs=1, use_cached=False, try_in_mem_cache=False)
  if max_examples:
    dataset = dataset.take(max_examples)
  vocabulary = task.output_features["targets"].vocabulary
  examples = []
  for ex in dataset.as_numpy_iterator():
    targets = [int(t) for t in ex["targets"]]
    reference = ex.get("targets_pretokenized")
    reference = (reference.decode("utf-8") if reference is not None else
                 vocabulary.decode([t for t in targets
                                    if t != vocabulary.eos_id]))
    examples.append({"inputs": ex["inputs"], "reference": reference,
                     "target_length": len(targets)})
  if not examples:
    raise ValueError(f"Split {split!r} of {task_name!r} has no examples.")
  return examples


def evaluate(model_config: ElmerConfig, params: Any,
             vocabulary: seqio.Vocabulary, examples: list[dict[str, Any]],
             config: GenerationEvalConfig, encoder_length: int
             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """Scores and per-example predictions (text, reference, exit layers)."""
  lengths = None
  if config.decode.length_mode == "oracle":
    lengths = [min(ex["target_length"], config.decode.max_length)
               for ex in examples]
  decoded, exits = decoding.decode_in_batches(
      model_config, params, config.decode, [ex["inputs"] for ex in examples],
      config.batch_size, encoder_length, lengths)
  predictions = [{"prediction": vocabularies.output_text(
                      vocabulary, out["tokens"], model_config),
                  "reference": ex["reference"],
                  "exit_layers": out["exit_layers"]}
                 for ex, out in zip(examples, decoded)]
  masks = exits >= 0
  scores = metrics.compute_metrics([p["prediction"] for p in predictions],
                                   [p["reference"] for p in predictions])
  scores.update(
      average_exit_layer=metrics.average_exit_layer(exits, masks),
      decoder_layers_saved=metrics.fraction_decoder_layers_saved(
          exits, masks, model_config.decoder_layers),
      examples=float(len(predictions)))
  return scores, predictions
