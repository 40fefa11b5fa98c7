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

import logging
import os

from absl import app, flags

from elmer_jax import run_config
from elmer_jax.data import vocabularies
from elmer_jax.data.vocab_tables import check_config_matches
from elmer_jax.export import importing

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
  for flag in (_HF_DIR, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  run_dir = _OUTPUT.value
  if os.path.exists(run_dir):
    raise FileExistsError(f"--output_dir={run_dir} exists; import_hf writes "
                          "a new run directory and overwrites nothing.")
  ids = {name: flag.value for name, flag in (("mask_token_id", _MASK),
                                             ("unk_token_id", _UNK))
         if flag.value is not None}
  config, params = importing.read_hf_directory(
      _HF_DIR.value, _SCAN.value, _SOFT_EXIT.value, ids)
  source = _VOCABULARY.value or importing.find_vocabulary(_HF_DIR.value)
  vocabulary = None
  if source:
    vocabulary = vocabularies.load_vocabulary(source)
    check_config_matches(config, vocabulary)
  else:
    logging.warning("%s has no vocab.json+merges.txt or *.model: RUN has no "
                    "vocabulary; pass --vocabulary, or bind VOCABULARY when "
                    "using RUN.", _HF_DIR.value)
  partial = run_dir.rstrip("/") + ".partial"
  if os.path.exists(partial):
    raise FileExistsError(f"{partial} exists (an import cut short?); remove "
                          "it first.")
  os.makedirs(partial)
  lines = run_config.model_bindings(config)
  if vocabulary is not None:
    copy = vocabularies.copy_into(source, partial)
    final = os.path.join(os.path.abspath(run_dir),
                         os.path.relpath(copy, partial))
    lines.append(f"VOCABULARY = {final!r}")
  run_config.write_run_config(partial, "\n".join(lines) + "\n")
  importing.save_step(params, partial)
  os.rename(partial, run_dir)
  print(f"Wrote run directory {run_dir} (config.gin, checkpoints/0"
        f"{', vocabulary/' if vocabulary is not None else ''}) for {config}.")


if __name__ == "__main__":
  app.run(main)
