"""What travels with a run directory: its model and its vocabulary.

Entry points parse gin through here. The vocabulary is one gin macro,
`VOCABULARY` (flag form `--gin.VOCABULARY="'path'"`): a SentencePiece
`.model` or a folder with BART's `vocab.json` + `merges.txt`. When it is
set, `vocab_size` and the special ids of `ElmerConfig` follow from it (a
command-line binding that disagrees is an error before anything compiles),
the built-in tasks and the file tasks use it (the command passes
`tasks.use_vocabulary`: this library never imports tasks/), and the trainer copies it into
`RUN/vocabulary/` with `config.gin` pointing at the copy.

`INIT_CHECKPOINT` naming a run directory (a training run, or what
`import_hf` writes) brings that run's `ElmerConfig` and vocabulary along:
they come before the gin files, so a file such as `runs/finetune.gin`
(`soft_exit = True`) still changes what it changes.
`ENCODER_BOS = False` builds encoder inputs as `tokens </s>` instead of
BART's `<s> tokens </s>`.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from elmer_jax import gin_utils
from elmer_jax.data import vocabularies
from elmer_jax.data.vocab_tables import check_config_matches
from elmer_jax.model.config import ElmerConfig

MODEL_IMPORTS = ("from __gin__ import dynamic_registration",
                 "from elmer_jax.model import config")


def optional_macro(name: str):
  """The value of gin macro `name`, None when it is not bound."""
  try:
    return gin_utils.macro(name)
  except ValueError:
    return None


def model_bindings(config: ElmerConfig) -> list[str]:
  """`config` as gin lines (with their imports) that rebuild it."""
  lines = [*MODEL_IMPORTS, "", "MODEL_CONFIG = @config.ElmerConfig()"]
  lines += [f"config.ElmerConfig.{field.name} = {getattr(config, field.name)!r}"
            for field in dataclasses.fields(config)]
  return lines


def vocabulary_bindings(vocabulary: seqio.Vocabulary) -> list[str]:
  return [f"config.ElmerConfig.{name} = {value}"
          for name, value in vocabularies.model_fields(vocabulary).items()]


def write_run_config(run_dir: str, text: str) -> None:
  with tf.io.gfile.GFile(os.path.join(run_dir, "config.gin"), "w") as f:
    f.write(text)


def run_vocabulary(run_dir: str) -> Optional[str]:
  """The vocabulary of a run: its own copy, else what its config names."""
  return vocabularies.run_copy(run_dir) or optional_macro("VOCABULARY")


def init_run(init_checkpoint: Optional[str]
             ) -> tuple[list[str], Optional[str]]:
  """(model bindings, vocabulary path) of the run `init_checkpoint` names;
  nothing for a bare checkpoint. Leaves gin cleared."""
  if not init_checkpoint:
    return [], None
  path = os.path.join(init_checkpoint, "config.gin")
  if not tf.io.gfile.exists(path):
    return [], None
  gin_utils.parse([path])
  try:
    model = gin_utils.macro("MODEL_CONFIG")
  except ValueError as e:
    raise ValueError(f"{path} (INIT_CHECKPOINT) does not define "
                     f"MODEL_CONFIG: {e}") from e
  vocabulary = run_vocabulary(init_checkpoint)
  gin.clear_config()
  return model_bindings(model), vocabulary


UseVocabulary = Callable[[seqio.Vocabulary], None]


def activate(path: str, use_vocabulary: UseVocabulary) -> seqio.Vocabulary:
  """Loads the vocabulary at `path` and makes the tasks use it
  (`use_vocabulary`: `tasks.use_vocabulary`, given by the command)."""
  encoder_bos = optional_macro("ENCODER_BOS")
  vocabulary = vocabularies.load_vocabulary(
      path, True if encoder_bos is None else encoder_bos)
  use_vocabulary(vocabulary)
  return vocabulary


def parse_for_training(gin_files: Sequence[str], gin_bindings: Sequence[str],
                       search_paths: Sequence[str] = (), *,
                       use_vocabulary: UseVocabulary
                       ) -> Optional[seqio.Vocabulary]:
  """Parses the trainer's gin (see the module docstring); returns the
  vocabulary set by `VOCABULARY` or the init run, None if neither (the tasks
  get it through `use_vocabulary`)."""
  gin_utils.parse(gin_files, gin_bindings, search_paths)
  prelude, init_vocabulary = init_run(optional_macro("INIT_CHECKPOINT"))
  gin_utils.parse(gin_files, gin_bindings, search_paths, prelude=prelude)
  path = optional_macro("VOCABULARY") or init_vocabulary
  if not path:
    return None
  vocabulary = activate(path, use_vocabulary)
  gin_utils.parse(gin_files, [*vocabulary_bindings(vocabulary),
                              f"VOCABULARY = {path!r}", *gin_bindings],
                  search_paths, prelude=prelude)
  try:
    check_config_matches(gin_utils.macro("MODEL_CONFIG"), vocabulary)
  except ValueError as e:
    raise ValueError(f"VOCABULARY={path!r}: {e}") from e
  return vocabulary


def keep_vocabulary_with_run(run_dir: str) -> None:
  """Copies `VOCABULARY` into `run_dir` and points the config at the copy."""
  path = optional_macro("VOCABULARY")
  if path:
    copy = vocabularies.copy_into(path, run_dir)
    gin.parse_config(f"VOCABULARY = {os.path.abspath(copy)!r}")
