"""Export a trained run as a Hugging Face directory that runs as ELMER.

  python -m elmer_jax.export --model_dir=RUN [--step=N] --output_dir=OUT \
      [--dtype=float32|bfloat16] [--exit_threshold=0.5] [--max_length=N]

The run's `config.gin` defines the model and vocabulary (as for
`elmer_jax.generate`). OUT then loads with
`AutoModelForSeq2SeqLM.from_pretrained(OUT, trust_remote_code=True)` (our
PyTorch ELMER), `AutoTokenizer.from_pretrained(OUT)`, and, as a causal BART,
`BartForConditionalGeneration.from_pretrained(OUT)`.
"""

import sys

from absl import app, flags

from elmer_jax import console, gin_utils

with console.quiet_native_load():  # These load TensorFlow.
  from elmer_jax import trained_model
  from elmer_jax.export import exporting, hf_weights

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The training run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: best "
                             "by eval loss, else latest).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "The directory to write.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", sorted(hf_weights.DTYPES),
                           "Precision of the exported weights.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace --output_dir if it exists.")
_THRESHOLD = flags.DEFINE_float("exit_threshold", 0.0, "Default entropy early "
                                "exit threshold (nats) of the PyTorch generate.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", None, "Default decoder "
                                   "slots of the PyTorch generate (default: "
                                   "the run's decoder_length).")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Extra gin files.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [],
                                          "Gin bindings (also --gin.X=Y).")


def main(argv):
  del argv
  console.setup()  # Third-party INFO logs (orbax's) off.
  for flag in (_MODEL_DIR, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  trained_model.parse_run_config(_MODEL_DIR.value, _GIN_FILES.value,
                                 _GIN_BINDINGS.value)
  import tasks  # pylint: disable=g-import-not-at-top  (registers the tasks)
  model = trained_model.load(_MODEL_DIR.value, _STEP.value,
                             use_vocabulary=tasks.use_vocabulary)
  exporting.write_hf_directory(
      model.config, model.params, _OUTPUT.value, dtype=_DTYPE.value,
      vocabulary=model.vocabulary, overwrite=_OVERWRITE.value,
      decoding=dict(exit_threshold=_THRESHOLD.value,
                    nar_max_length=_MAX_LENGTH.value or model.slots))
  print(f"Exported {model.checkpoint} to {_OUTPUT.value}.")


def run() -> None:
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
