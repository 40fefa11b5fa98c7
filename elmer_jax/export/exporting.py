"""Writing a Hugging Face directory from our parameters.

The directory holds `model.safetensors` (BART key names, PyTorch layouts,
`lm_head` tied to `model.shared.weight`), `config.json` (BART + ELMER fields
and an `auto_map`), the PyTorch ELMER module for `trust_remote_code`, and the
tokenizer files and the vocabulary's own files (so `import_hf` of the export
finds them) when a vocabulary is given. It is written to a sibling
`*.partial` directory and renamed when complete, so a crash never leaves a
directory that looks finished.
"""

import json
import os
import shutil
from typing import Any, Mapping, Optional

import seqio
import tensorflow as tf

from elmer_jax.data.bpe_vocabulary import ByteLevelBPEVocabulary
from elmer_jax.export import hf_config, hf_tokenizer, hf_weights, param_map
from elmer_jax.model.config import ElmerConfig

# The PyTorch module shipped into every export.
MODULE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "hf_module")
MODULE_FILES = ("configuration_elmer.py", "modeling_elmer.py")


def _copy_vocabulary_files(vocabulary: seqio.Vocabulary, output_dir: str
                           ) -> None:
  """The vocabulary's own files (BART's vocab.json + merges.txt, or the
  SentencePiece model), so `import_hf` of the export finds them."""
  if isinstance(vocabulary, ByteLevelBPEVocabulary):
    sources = [vocabulary.vocab_file, vocabulary.merges_file]
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    sources = [vocabulary.sentencepiece_model_file]
  else:
    return
  for source in sources:
    tf.io.gfile.copy(source, os.path.join(output_dir,
                                          os.path.basename(source)))


def write_hf_directory(config: ElmerConfig, params: Any, output_dir: str, *,
                       dtype: str = "float32",
                       vocabulary: Optional[seqio.Vocabulary] = None,
                       decoding: Optional[Mapping[str, Any]] = None,
                       overwrite: bool = False) -> None:
  """Exports `params` (either layer layout) of a model of `config`.

  `decoding`: defaults of the PyTorch `generate` (exit_threshold,
  nar_length_mode, nar_max_length, collapse_repeats).
  """
  output_dir = output_dir.rstrip("/")
  if os.path.exists(output_dir) and not overwrite:
    raise FileExistsError(f"{output_dir} exists; pass overwrite (--overwrite) "
                          "to replace it.")
  state = param_map.to_hf(params, config)
  fields = hf_config.to_hf(config, decoding)
  partial = output_dir + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  hf_weights.write_safetensors(
      state, os.path.join(partial, hf_weights.SAFETENSORS), dtype)
  with open(os.path.join(partial, "config.json"), "w") as f:
    json.dump(dict(fields, torch_dtype=dtype), f, indent=2, sort_keys=True)
  for name in MODULE_FILES:
    shutil.copyfile(os.path.join(MODULE_DIR, name), os.path.join(partial, name))
  if vocabulary is not None:
    hf_tokenizer.write_tokenizer(vocabulary, config, partial)
    _copy_vocabulary_files(vocabulary, partial)
  shutil.rmtree(output_dir, ignore_errors=True)
  os.rename(partial, output_dir)
