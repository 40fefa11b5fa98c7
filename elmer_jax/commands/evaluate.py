"""Evaluate a trained ELMER's generations on a task split.

  python -m elmer_jax.evaluate --model_dir=RUN --gin_file=runs/eval.gin \
      [--gin.decoding.DecodeConfig.exit_threshold=0.5] [--step=N]

Decodes the split (`GENERATION_EVAL`, see gin_configs/runs/eval.gin; the
task and input length default to the run's), scores ROUGE-1/2/L, BLEU-4,
distinct-1/2, the average exit layer and the decoder-layer passes saved, and
writes them as JSON (`RUN/eval/<task>.<split>.step<N>.<mode><slots>.exit<t>
.json`, with the predictions beside it; a name already taken gets `.2`, `.3`,
so no result is overwritten) and TensorBoard/JSONL scalars (`RUN/eval/`).
Decoder slots default to the run's `decoder_length`.
"""

import dataclasses
import json
import sys

from absl import app, flags

from elmer_jax import console, gin_utils

with console.quiet_native_load():  # These load TensorFlow.
  from elmer_jax import generation_eval, generation_results, trained_model

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best "
                             "by eval loss, else latest).")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Extra gin files, "
                                       "e.g. runs/eval.gin.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [],
                                          "Gin bindings (also --gin.X=Y).")


def _eval_config(train_config, slots: int
                 ) -> generation_eval.GenerationEvalConfig:
  try:
    config = gin_utils.macro("GENERATION_EVAL")
  except ValueError:
    config = generation_eval.GenerationEvalConfig()
  if train_config is None and not (config.mixture_or_task
                                   and config.encoder_length):
    raise ValueError(
        "The run has no training config (an import_hf run directory): bind "
        "generation_eval.GenerationEvalConfig.mixture_or_task and "
        ".encoder_length (e.g. --gin.generation_eval.GenerationEvalConfig."
        "mixture_or_task=\"'xsum_elmer'\").")
  decode = config.decode
  if decode.max_length is None:
    decode = dataclasses.replace(decode, max_length=slots)
  return dataclasses.replace(
      config, decode=decode,
      mixture_or_task=config.mixture_or_task or train_config.mixture_or_task,
      encoder_length=config.encoder_length or train_config.encoder_length)


def main(argv):
  del argv
  console.setup()  # Third-party INFO logs (orbax's) off.
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required: the training run.")
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  import tasks  # pylint: disable=g-import-not-at-top  (registers the tasks)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value,
                             use_vocabulary=tasks.use_vocabulary)
  config = _eval_config(model.train_config, model.slots)
  examples = generation_eval.read_examples(
      config.mixture_or_task, config.split, config.encoder_length,
      config.decode.max_length, config.max_examples)
  scores, predictions = generation_eval.evaluate(
      model.config, model.params, model.vocabulary, examples, config,
      config.encoder_length)
  result = generation_results.write_result(
      _MODEL_DIR.value, model.checkpoint, config, scores, predictions)
  print(json.dumps(result))


def run() -> None:
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
