"""A run directory made from a Hugging Face BART/ELMER directory: what
`python -m elmer_jax.import_hf` writes.

RUN gets `config.gin` (the model's ElmerConfig as bindings and `VOCABULARY`,
pointing at the vocabulary copied into `RUN/vocabulary/`) and
`checkpoints/0`. It is written as `RUN.partial` and renamed when whole, so a
cut-short import never looks like a run.
"""

import logging
import os
from typing import Optional

from elmer_jax import run_config
from elmer_jax.data import vocabularies
from elmer_jax.data.vocab_tables import check_config_matches
from elmer_jax.export import importing
from elmer_jax.model.config import ElmerConfig


def write_run_directory(hf_dir: str, run_dir: str, *, scan_layers: bool,
                        soft_exit: str, ids: dict[str, int],
                        vocabulary_path: Optional[str]
                        ) -> tuple[ElmerConfig, bool]:
  """Imports `hf_dir` into the new `run_dir`; returns the model's config and
  whether RUN has a vocabulary. `ids`: special ids for a directory without
  tokenizer files; `vocabulary_path` default: `hf_dir`'s own."""
  if os.path.exists(run_dir):
    raise FileExistsError(f"--output_dir={run_dir} exists; import_hf writes "
                          "a new run directory and overwrites nothing.")
  config, params = importing.read_hf_directory(hf_dir, scan_layers, soft_exit,
                                               ids)
  source = vocabulary_path or importing.find_vocabulary(hf_dir)
  vocabulary = None
  if source:
    vocabulary = vocabularies.load_vocabulary(source)
    check_config_matches(config, vocabulary)
  else:
    logging.warning("%s has no vocab.json+merges.txt or *.model: RUN has no "
                    "vocabulary; pass --vocabulary, or bind VOCABULARY when "
                    "using RUN.", hf_dir)
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
  return config, vocabulary is not None
