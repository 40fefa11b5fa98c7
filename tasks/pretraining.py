"""ELMER pretraining tasks: C4, Wikipedia, their mixture, local files, sample.

All tasks read raw documents, noise them online (BART's sentence permutation
and text infilling, seeded by seqio) and ask the model to reconstruct the
original. They share one vocabulary; by default the SentencePiece model
bundled with the sample, so everything runs offline. For BART's vocabulary
(RUCAIBox/elmer), call `register_pretraining_tasks` with a
`ByteLevelBPEVocabulary` and a suffix.
"""

import os
import re
from typing import Optional, Sequence

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from elmer_jax.data import preprocessors, vocabularies
from elmer_jax.data.noising import NoiseConfig
from elmer_jax.data.vocab_tables import special_ids, vocab_tables

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                          "wiki_sample")
SAMPLE_JSONL = os.path.join(SAMPLE_DIR, "wiki_sample.jsonl")
SAMPLE_SPM = os.path.join(SAMPLE_DIR, "spm_8k.model")
C4_TFDS = "c4/en:3.1.0"


def newest_wikipedia_en() -> str:
  """The newest English config of the installed TFDS Wikipedia builder."""
  builder = tfds.builder_cls("wikipedia")
  configs = [c.name for c in builder.BUILDER_CONFIGS if c.name.endswith(".en")]
  return f"wikipedia/{max(configs)}:{builder.VERSION}"


def holdout_source(path: str, holdout_buckets: int = 1,
                   num_buckets: int = 20) -> seqio.FunctionDataSource:
  """`train`/`validation` from one line-per-document file: a line's content
  hash puts it in validation (holdout_buckets / num_buckets of them, 5% by
  default) or train, the same way on every machine."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"Data file {path} does not exist.")

  def dataset_fn(split: str, shuffle_files: bool, seed=None):
    del shuffle_files, seed  # One file: nothing to shuffle at file level.
    lines = tf.data.TextLineDataset(path)
    held_out = lambda line: tf.strings.to_hash_bucket_fast(
        line, num_buckets) < holdout_buckets
    keep = held_out if split == "validation" else (
        lambda line: tf.logical_not(held_out(line)))
    return lines.filter(keep)

  return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation"))


_DEFAULT_VOCABULARY: list[seqio.Vocabulary] = []


def set_default_vocabulary(vocabulary: seqio.Vocabulary) -> None:
  """What tasks registered without a vocabulary use from now on (the run's
  `VOCABULARY`)."""
  _DEFAULT_VOCABULARY[:] = [vocabulary]


def default_vocabulary() -> seqio.Vocabulary:
  """The run's vocabulary if one was set, else the bundled sample's."""
  if _DEFAULT_VOCABULARY:
    return _DEFAULT_VOCABULARY[0]
  if not os.path.exists(SAMPLE_SPM):
    raise FileNotFoundError(f"SentencePiece model {SAMPLE_SPM} is missing; "
                            "rebuild it with tasks/data/build_wiki_sample.py.")
  return seqio.SentencePieceVocabulary(SAMPLE_SPM)


def encoder_bos_id(vocabulary: seqio.Vocabulary) -> Optional[int]:
  """`<s>`'s id if encoder inputs start with it (the vocabulary says)."""
  return (special_ids(vocabulary)["bos"]
          if vocabularies.encoder_bos(vocabulary) else None)


def output_features(vocabulary: seqio.Vocabulary) -> dict:
  feature = seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype="int32")
  return {"inputs": feature, "targets": feature}


def _register(name: str, source: seqio.DataSource,
              vocabulary: seqio.Vocabulary, noise: NoiseConfig,
              split_long_documents: bool, pre: Sequence = ()) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=[*pre, *preprocessors.pretraining_preprocessors(
          vocab_tables(vocabulary), noise,
          split_long_documents=split_long_documents,
          bos_id=encoder_bos_id(vocabulary))],
      output_features=output_features(vocabulary), metric_fns=[])


def file_format_of(patterns: Sequence[str]) -> str:
  """'jsonl' for files named *.jsonl / *.json (also .gz), else 'text'; the
  patterns of one task must agree."""
  formats = {"jsonl" if re.search(r"\.jsonl?(\.gz)?$", p) else "text"
             for p in patterns}
  if len(formats) > 1:
    raise ValueError(f"Files {list(patterns)} mix JSONL and text extensions; "
                     "set file_format ('text' or 'jsonl').")
  return formats.pop() if formats else "text"


def data_path(pattern: str) -> str:
  """A relative `pattern` that matches nothing in the working directory is
  read from the package root, where the bundled data lives (tasks/data/...),
  so the bundled configs work from any directory."""
  if os.path.isabs(pattern) or "://" in pattern or tf.io.gfile.glob(pattern):
    return pattern
  bundled = os.path.join(PACKAGE_ROOT, pattern)
  return bundled if tf.io.gfile.glob(bundled) else pattern


def register_text_files_task(name: str, train_files: Sequence[str],
                             validation_files: Sequence[str] = (),
                             file_format: Optional[str] = None,
                             text_field: str = "text",
                             vocabulary: Optional[seqio.Vocabulary] = None,
                             noise: NoiseConfig = NoiseConfig(),
                             split_long_documents: bool = True) -> str:
  """A pretraining task over your own files (local paths or gs://, globs ok).

  `file_format`: "text" (one document per line) or "jsonl" (one JSON object
  per line, document in `text_field`); None takes it from the extension
  (`file_format_of`). Returns the task name, so a gin file can bind it where
  a task name is expected.
  """
  splits = {"train": [data_path(p) for p in train_files]}
  if validation_files:
    splits["validation"] = [data_path(p) for p in validation_files]
  file_format = file_format or file_format_of(
      [p for patterns in splits.values() for p in patterns])
  if file_format not in ("text", "jsonl"):
    raise ValueError(f"file_format={file_format!r}; expected 'text' or "
                     "'jsonl' (or None: from the file extension).")
  for split, patterns in splits.items():
    for pattern in patterns:
      if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"No {split} data file matches {pattern!r} "
                                f"(task {name}).")
  source = seqio.TextLineDataSource(splits)
  pre = [preprocessors.parse_jsonl(text_field) if file_format == "jsonl"
         else preprocessors.parse_text_line]
  _register(name, source, vocabulary or default_vocabulary(), noise,
            split_long_documents, pre)
  return name


def register_pretraining_tasks(vocabulary: Optional[seqio.Vocabulary] = None,
                               suffix: str = "",
                               noise: NoiseConfig = NoiseConfig(),
                               tfds_data_dir: Optional[str] = None) -> str:
  """C4, Wikipedia, their mixture and the bundled sample, for `vocabulary`;
  returns the mixture's name (so gin can bind it as the training task).

  `tfds_data_dir`: where TFDS data lives (a local path or gs://...); None
  uses TFDS's default.
  """
  vocabulary = vocabulary or default_vocabulary()
  _register(f"c4_en_elmer{suffix}",
            seqio.TfdsDataSource(tfds_name=C4_TFDS, tfds_data_dir=tfds_data_dir,
                                 splits={"train": "train",
                                         "validation": "validation"}),
            vocabulary, noise, True)
  _register(f"wikipedia_en_elmer{suffix}",
            seqio.TfdsDataSource(tfds_name=newest_wikipedia_en(),
                                 tfds_data_dir=tfds_data_dir,
                                 splits={"train": "train[:99%]",
                                         "validation": "train[99%:]"}),
            vocabulary, noise, True)
  seqio.MixtureRegistry.remove(f"c4_wiki_elmer{suffix}")
  seqio.MixtureRegistry.add(f"c4_wiki_elmer{suffix}",
                            [(f"c4_en_elmer{suffix}", 1.0),
                             (f"wikipedia_en_elmer{suffix}", 1.0)])
  _register(f"sample_wiki_elmer{suffix}", holdout_source(SAMPLE_JSONL),
            vocabulary, noise, True, [preprocessors.parse_jsonl("text")])
  return f"c4_wiki_elmer{suffix}"
