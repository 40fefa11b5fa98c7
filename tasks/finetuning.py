"""ELMER fine-tuning tasks: source → target pairs, no noising.

Registered here:

- `xsum_elmer`: TFDS `xsum`, `document` → `summary` (XSUM needs a manual
  download; point `tfds_data_dir` at the prepared data).
- `squad_qg_elmer`: TFDS `squad/v1.1`, question generation as in GLGE's
  squadqg: input `"<answer> [SEP] <passage>"` (the first answer; the answer
  comes first so that trimming long passages never cuts it) → `question`.
  Validation is SQuAD's dev set (GLGE re-splits it into dev and test).
- `sample_title_elmer`: the bundled Wikipedia sample, an article's first
  paragraph → its title.
- `sample_sentence_denoise_elmer`: the bundled sample, the first sentence of
  every paragraph with `SENTENCE_MASK_RATIO` of its tokens replaced by
  `<mask>` (one for one, so positions stay aligned) → the sentence. Meant to
  be learnable by a tiny model in a few hundred CPU steps, as a smoke test
  for fine-tuning. The masks are a function of the sentence, not of the
  seed, so validation is the same on every run.
- `register_pairs_task`: your own files (GLGE-style `.src`/`.tgt`, e.g.
  PersonaChat; JSONL; TSV).

The sample tasks split by article with `pretraining.holdout_source`, so
their validation articles are the ones held out from `sample_wiki_elmer`.

Every task tokenizes `inputs` and `targets`, drops examples whose source or
target is empty, trims and adds the special tokens (`<s> inputs </s>` as
BART's tokenizer, unless the vocabulary says no `<s>`; `targets </s>`), and
keeps the raw strings as
`inputs_pretokenized` / `targets_pretokenized` for evaluation (the feature
converter drops them from model batches).
"""

from typing import Callable, Optional, Sequence

import seqio
import tensorflow as tf

from elmer_jax.data import preprocessors
from elmer_jax.data.pair_preprocessors import (
    finetuning_preprocessors, first_sentences, mask_tokens, parse_jsonl_pair,
    parse_tsv_pair, read_src_tgt, rekey, squad_question_generation,
    title_from_lead)
from elmer_jax.data.vocab_tables import special_ids
from tasks import pretraining

XSUM_TFDS = "xsum:1.1.0"
SQUAD_TFDS = "squad/v1.1:3.0.0"
SENTENCE_MASK_RATIO = 0.15
FILE_FORMATS = ("src_tgt", "jsonl", "tsv")


def _register(name: str, source: seqio.DataSource,
              vocabulary: seqio.Vocabulary, pre: Sequence[Callable],
              tokenized: Sequence[Callable] = ()) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=finetuning_preprocessors(
          pre, tokenized, pretraining.encoder_bos_id(vocabulary)),
      output_features=pretraining.output_features(vocabulary), metric_fns=[])


def _check_pairs_files(name: str, split: str, patterns: Sequence[str],
                       file_format: str) -> None:
  for pattern in patterns:
    matches = tf.io.gfile.glob(pattern)
    if not matches:
      raise FileNotFoundError(f"No {split} data file matches {pattern!r} "
                              f"(task {name}).")
    if file_format != "src_tgt":
      continue
    for path in matches:
      if not path.endswith(".src"):
        raise ValueError(f"{split} file {path} (from {pattern!r}, task "
                         f"{name}) does not end in .src; with "
                         "file_format='src_tgt' name the source files, the "
                         "targets are read from the same path ending in .tgt.")
      if not tf.io.gfile.exists(path[:-len(".src")] + ".tgt"):
        raise FileNotFoundError(
            f"{split} source file {path} (task {name}) has no target file "
            f"{path[:-len('.src')]}.tgt.")


def register_pairs_task(name: str, train_files: Sequence[str],
                        validation_files: Sequence[str] = (),
                        test_files: Sequence[str] = (),
                        file_format: str = "src_tgt",
                        source_field: str = "source",
                        target_field: str = "target",
                        vocabulary: Optional[seqio.Vocabulary] = None) -> str:
  """A fine-tuning task over your own pairs (local paths or gs://, globs ok).

  `file_format`:
    "src_tgt": GLGE-style line-aligned files; the patterns name the `.src`
      files (e.g. `data/personachat/train.src`), each one's targets are the
      same path ending in `.tgt`. Files of different lengths raise when
      read.
    "jsonl": one JSON object per line, pair in `source_field` and
      `target_field`.
    "tsv": `source<TAB>target` per line, no header.
  Lines with an empty (or missing) source or target are dropped. Returns the
  task name, so a gin file can bind it where a task name is expected.
  """
  if file_format not in FILE_FORMATS:
    raise ValueError(f"file_format={file_format!r}; expected one of "
                     f"{FILE_FORMATS}.")
  splits = {split: list(patterns) for split, patterns in
            (("train", train_files), ("validation", validation_files),
             ("test", test_files)) if patterns}
  if "train" not in splits:
    raise ValueError(f"Task {name}: train_files is empty.")
  for split, patterns in splits.items():
    _check_pairs_files(name, split, patterns, file_format)
  if file_format == "src_tgt":
    source = seqio.FileDataSource(read_src_tgt, splits)
    pre = []
  else:
    source = seqio.TextLineDataSource(splits)
    pre = [parse_tsv_pair if file_format == "tsv"
           else parse_jsonl_pair(source_field, target_field)]
  _register(name, source, vocabulary or pretraining.default_vocabulary(), pre)
  return name


def register_finetuning_tasks(vocabulary: Optional[seqio.Vocabulary] = None,
                              suffix: str = "",
                              tfds_data_dir: Optional[str] = None) -> None:
  """XSUM, SQuAD question generation and the two sample tasks, for
  `vocabulary` (default: the sample's SentencePiece model).

  `tfds_data_dir`: where TFDS data lives (a local path or gs://...); None
  uses TFDS's default.
  """
  vocabulary = vocabulary or pretraining.default_vocabulary()
  _register(f"xsum_elmer{suffix}",
            seqio.TfdsDataSource(tfds_name=XSUM_TFDS,
                                 tfds_data_dir=tfds_data_dir,
                                 splits=("train", "validation", "test")),
            vocabulary, [rekey("document", "summary")])
  _register(f"squad_qg_elmer{suffix}",
            seqio.TfdsDataSource(tfds_name=SQUAD_TFDS,
                                 tfds_data_dir=tfds_data_dir,
                                 splits=("train", "validation")),
            vocabulary, [squad_question_generation])
  sample = pretraining.holdout_source(pretraining.SAMPLE_JSONL)
  _register(f"sample_title_elmer{suffix}", sample, vocabulary,
            [parse_jsonl_pair("text", "title"), title_from_lead])
  _register(f"sample_sentence_denoise_elmer{suffix}", sample, vocabulary,
            [preprocessors.parse_jsonl("text"), first_sentences],
            [mask_tokens(special_ids(vocabulary)["mask"],
                         SENTENCE_MASK_RATIO)])
