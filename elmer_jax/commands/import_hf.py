"""Turn a Hugging Face BART/ELMER directory into a ready run directory.

  python -m elmer_jax.import_hf --hf_dir=DIR --output_dir=RUN \
      [--soft_exit=auto|true|false] [--vocabulary=PATH] [--scan_layers]

DIR may be a local copy of RUCAIBox/elmer (`config.json`,
`pytorch_model.bin` or `model.safetensors`, `vocab.json`, `merges.txt`; with
or without `concat_head.weight`) or one of our exports. RUN gets
`config.gin` (the model's ElmerConfig as bindings and `VOCABULARY`, pointing
at the vocabulary copied into `RUN/vocabulary/`) and `checkpoints/0`. Then,
with no gin of your own, `python -m elmer_jax.generate --model_dir=RUN`,
`evaluate`, `export`, and fine-tuning with `--gin.INIT_CHECKPOINT="'RUN'"`
(which takes RUN's model and vocabulary) work on it.
"""

from absl import app, flags

from elmer_jax import console

with console.quiet_native_load():  # These load TensorFlow.
  from elmer_jax.export import importing, run_directory

_HF_DIR = flags.DEFINE_string("hf_dir", None, "The Hugging Face directory.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "The run directory to "
                              "write (must not exist).")
_SCAN = flags.DEFINE_bool("scan_layers", False, "Write the stacked layout "
                          "(ElmerConfig.scan_layers=True).")
_SOFT_EXIT = flags.DEFINE_enum(
    "soft_exit", "auto", list(importing.SOFT_EXIT_CHOICES),
    "auto: a soft-exit model if concat_head.weight is present; false drops "
    "it (a released LPLM model may carry an untrained one).")
_MASK = flags.DEFINE_integer("mask_token_id", None, "<mask> id, for a "
                             "directory without tokenizer files.")
_UNK = flags.DEFINE_integer("unk_token_id", None, "<unk> id, for a "
                            "directory without tokenizer files.")
_VOCABULARY = flags.DEFINE_string(
    "vocabulary", None, "A SentencePiece .model or a vocab.json+merges.txt "
    "folder (default: DIR's vocab.json+merges.txt, else its one *.model).")


def main(argv):
  del argv
  console.setup()  # Third-party INFO logs (orbax's) off.
  for flag in (_HF_DIR, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  ids = {name: flag.value for name, flag in (("mask_token_id", _MASK),
                                             ("unk_token_id", _UNK))
         if flag.value is not None}
  config, has_vocabulary = run_directory.write_run_directory(
      _HF_DIR.value, _OUTPUT.value, scan_layers=_SCAN.value,
      soft_exit=_SOFT_EXIT.value, ids=ids, vocabulary_path=_VOCABULARY.value)
  print(f"Wrote run directory {_OUTPUT.value} (config.gin, checkpoints/0"
        f"{', vocabulary/' if has_vocabulary else ''}) for {config}.")


def run() -> None:
  app.run(main)


if __name__ == "__main__":
  run()
