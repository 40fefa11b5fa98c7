"""Generate with a trained ELMER: one text per input line.

  python -m elmer_jax.generate --model_dir=RUN --input_file=in.txt \
      --output_file=out.txt [--exit_threshold=0.5] [--max_length=64]

The run's `config.gin` defines the model and vocabulary; `--gin_file` and
`--gin.NAME=VALUE` add to it. `--output_format=jsonl` writes the token ids
and each token's exit layer too.
"""

import json
import sys

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
_MAX_LENGTH = flags.DEFINE_integer("max_length", 64, "Decoder slots.")
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


def main(argv):
  del argv
  for flag in (_MODEL_DIR, _INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  config = decoding.DecodeConfig(
      length_mode="max_length", max_length=_MAX_LENGTH.value,
      exit_threshold=_THRESHOLD.value, collapse_repeats=_COLLAPSE.value)
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value)
  with tf.io.gfile.GFile(_INPUT.value) as f:
    texts = f.read().splitlines()
  results = decoding.generate_text(model.config, model.params,
                                   model.vocabulary, texts, config,
                                   _MAX_INPUT.value, _BATCH.value)
  with tf.io.gfile.GFile(_OUTPUT.value, "w") as f:
    for result in results:
      f.write((json.dumps(result) if _FORMAT.value == "jsonl"
               else result["text"].replace("\n", " ")) + "\n")
  print(f"Wrote {len(results)} outputs to {_OUTPUT.value} "
        f"(checkpoint {model.checkpoint}).")


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))
