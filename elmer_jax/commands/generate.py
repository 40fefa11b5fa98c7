"""Generate with a trained ELMER: one text per input line.

  python -m elmer_jax.generate --model_dir=RUN --input_file=in.txt \
      --output_file=out.txt [--exit_threshold=0.5] [--max_length=N]

The run's `config.gin` defines the model and vocabulary; `--gin_file` and
`--gin.NAME=VALUE` add to it. `--max_length` (decoder slots) defaults to the
run's `decoder_length`, the slots the model was trained with; the output is
cut at the first `</s>`. Output line i answers input line i: a blank input
line gives an empty output line, an empty file an empty file.
`--output_format=jsonl` writes the token ids and each token's exit layer too.
"""

import sys
from typing import Optional

from absl import app, flags

from elmer_jax import console, gin_utils

with console.quiet_native_load():  # These load TensorFlow.
  from elmer_jax import decoding, line_generation, trained_model

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run.")
_INPUT = flags.DEFINE_string("input_file", None, "One input text per line.")
_OUTPUT = flags.DEFINE_string("output_file", None, "Where outputs go.")
_FORMAT = flags.DEFINE_enum("output_format", "text",
                            list(line_generation.OUTPUT_FORMATS),
                            "Plain text lines, or JSON with ids and exits.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best "
                             "by eval loss, else latest).")
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "Decoder slots "
                                   "(default: the run's decoder_length).")
_MAX_INPUT = flags.DEFINE_integer("max_input_length", 512,
                                  "Inputs are cut to this many tokens.")
_THRESHOLD = flags.DEFINE_float("exit_threshold", 0.0, "Entropy early exit "
                                "threshold in nats; 0 turns it off.")
_COLLAPSE = flags.DEFINE_bool("collapse_repeats", False,
                              "Merge repeated consecutive tokens.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Inputs per decoder pass.")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Extra gin files.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [],
                                          "Gin bindings (also --gin.X=Y).")


def slots(max_length: Optional[int], model: trained_model.TrainedModel
          ) -> int:
  """`--max_length`, else the run's decoder_length; within [2, positions]."""
  length = model.slots if max_length is None else max_length
  if not 2 <= length <= model.config.max_positions:
    source = ("--max_length" if max_length is not None else
              "The run's TrainConfig.decoder_length")
    raise app.UsageError(
        f"{source}={length}: decoder slots must lie in [2, "
        f"{model.config.max_positions}] (`<s>` and at least one more; the "
        "decoder's position table, ElmerConfig.max_positions).")
  return length


def main(argv):
  del argv
  console.setup()  # Third-party INFO logs (orbax's) off.
  for flag in (_MODEL_DIR, _INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  if _MAX_LENGTH.value is not None and _MAX_LENGTH.value < 2:
    raise app.UsageError(f"--max_length={_MAX_LENGTH.value}: decoder slots "
                         "must be >= 2 (`<s>` and at least one more).")
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  import tasks  # pylint: disable=g-import-not-at-top  (registers the tasks)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value,
                             use_vocabulary=tasks.use_vocabulary)
  texts = line_generation.read_lines(_INPUT.value)
  config = decoding.DecodeConfig(
      length_mode="max_length", max_length=slots(_MAX_LENGTH.value, model),
      exit_threshold=_THRESHOLD.value, collapse_repeats=_COLLAPSE.value)
  results = line_generation.generate_lines(model, texts, config,
                                           _MAX_INPUT.value, _BATCH.value,
                                           _INPUT.value)
  line_generation.write_lines(_OUTPUT.value, results, _FORMAT.value)
  print(f"Wrote {len(results)} outputs to {_OUTPUT.value} "
        f"(checkpoint {model.checkpoint}, {config.max_length} slots).")


def run() -> None:
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
