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

import json
import logging
import sys
from typing import Optional

from absl import app, flags
import tensorflow as tf

from elmer_jax import decoding, gin_utils, trained_model

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run.")
_INPUT = flags.DEFINE_string("input_file", None, "One input text per line.")
_OUTPUT = flags.DEFINE_string("output_file", None, "Where outputs go.")
_FORMAT = flags.DEFINE_enum("output_format", "text", ["text", "jsonl"],
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


def read_lines(path: str) -> list[str]:
  """The file's lines (no line ends); a line that is not UTF-8 is named by
  its 1-based number."""
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read().splitlines()
  lines = []
  for number, line in enumerate(raw, start=1):
    try:
      lines.append(line.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise ValueError(f"{path} line {number} is not UTF-8 text ({e}); "
                       "--input_file needs one UTF-8 text per line.") from e
  return lines


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
  for flag in (_MODEL_DIR, _INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  if _MAX_LENGTH.value is not None and _MAX_LENGTH.value < 2:
    raise app.UsageError(f"--max_length={_MAX_LENGTH.value}: decoder slots "
                         "must be >= 2 (`<s>` and at least one more).")
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value)
  texts = read_lines(_INPUT.value)
  config = decoding.DecodeConfig(
      length_mode="max_length", max_length=slots(_MAX_LENGTH.value, model),
      exit_threshold=_THRESHOLD.value, collapse_repeats=_COLLAPSE.value)
  filled = [i for i, text in enumerate(texts) if text.strip()]
  if len(filled) < len(texts):
    logging.warning("%d of %d lines of %s are blank: their output lines are "
                    "empty.", len(texts) - len(filled), len(texts),
                    _INPUT.value)
  results = [{"text": "", "tokens": [], "exit_layers": []} for _ in texts]
  if filled:
    decoded = decoding.generate_text(
        model.config, model.params, model.vocabulary,
        [texts[i] for i in filled], config, _MAX_INPUT.value, _BATCH.value)
    for i, result in zip(filled, decoded):
      results[i] = result
  # One write, even of nothing: GFile creates (truncates) a file only when
  # written to.
  with tf.io.gfile.GFile(_OUTPUT.value, "w") as f:
    f.write("".join((json.dumps(result) if _FORMAT.value == "jsonl"
                     else result["text"].replace("\n", " ")) + "\n"
                    for result in results))
  print(f"Wrote {len(results)} outputs to {_OUTPUT.value} "
        f"(checkpoint {model.checkpoint}, {config.max_length} slots).")


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))
