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

import functools
import json
from typing import Callable, Optional, Sequence

import seqio
import tensorflow as tf

from elmer_jax.data import preprocessors
from elmer_jax.data.vocab_tables import special_ids
from tasks import pretraining

XSUM_TFDS = "xsum:1.1.0"
SQUAD_TFDS = "squad/v1.1:3.0.0"
QG_SEPARATOR = " [SEP] "
SENTENCE_MASK_RATIO = 0.15
FILE_FORMATS = ("src_tgt", "jsonl", "tsv")


def rekey(source_key: str, target_key: str) -> Callable:
  """Keeps only the pair, as `inputs` and `targets`."""

  @seqio.map_over_dataset
  def pick(features):
    return {"inputs": features[source_key], "targets": features[target_key]}

  return pick


@seqio.map_over_dataset
def squad_question_generation(features: dict) -> dict[str, tf.Tensor]:
  """SQuAD → `"answer [SEP] passage"` and the question. Questions without
  an answer get an empty input, which `clean_pairs` then drops."""
  answers = features["answers"]["text"]
  answer = tf.concat([answers, [""]], 0)[0]
  inputs = tf.strings.join([answer, QG_SEPARATOR, features["context"]])
  has_answer = tf.strings.length(tf.strings.strip(answer)) > 0
  return {"inputs": tf.where(has_answer, inputs, ""),
          "targets": features["question"]}


def _json_fields(line: bytes, fields: Sequence[str]) -> list[bytes]:
  try:
    record = json.loads(line.decode("utf-8", errors="replace"))
    values = [record.get(field) for field in fields]
  except (json.JSONDecodeError, AttributeError):
    values = [None] * len(fields)
  return [b"" if value is None else str(value).encode("utf-8")
          for value in values]


def parse_jsonl_pair(source_field: str, target_field: str) -> Callable:
  """JSON lines → `inputs`/`targets` from two fields (non-string values via
  `str`); unparsable lines and missing or null fields become empty (and are
  dropped by `clean_pairs`)."""

  @seqio.map_over_dataset
  def parse(line):
    source, target = tf.numpy_function(
        functools.partial(_json_fields, fields=(source_field, target_field)),
        [line], [tf.string, tf.string], stateful=False)
    source.set_shape([])
    target.set_shape([])
    return {"inputs": source, "targets": target}

  return parse


@seqio.map_over_dataset
def parse_tsv_pair(line: tf.Tensor) -> dict[str, tf.Tensor]:
  """`source<TAB>target`; further columns are ignored, a line without a tab
  has no target."""
  columns = tf.concat([tf.strings.split(line, "\t"), ["", ""]], 0)
  return {"inputs": columns[0], "targets": columns[1]}


def _numbered_lines(path: tf.Tensor) -> tf.data.Dataset:
  """(line, True) for each line, then ("", False) forever."""
  lines = tf.data.TextLineDataset(path).map(lambda line: (line, True))
  return lines.concatenate(
      tf.data.Dataset.from_tensors((tf.constant(""), False)).repeat())


def read_src_tgt(src_path: tf.Tensor) -> tf.data.Dataset:
  """Line-aligned `X.src`/`X.tgt` → pairs. A file that ends before its
  partner raises `InvalidArgumentError` naming both, when reading gets there
  (the files are never counted up front: they may be large and on gs://)."""
  tgt_path = tf.strings.regex_replace(src_path, r"\.src$", ".tgt")
  both = tf.data.Dataset.zip((_numbered_lines(src_path),
                              _numbered_lines(tgt_path)))
  both = both.take_while(lambda src, tgt: tf.logical_or(src[1], tgt[1]))

  def check(src, tgt):
    same = tf.debugging.Assert(
        tf.equal(src[1], tgt[1]),
        ["Source and target files have different numbers of lines:",
         src_path, tgt_path])
    with tf.control_dependencies([same]):
      return {"inputs": tf.identity(src[0]), "targets": tf.identity(tgt[0])}

  return both.map(check)


def clean_pairs(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Replaces invalid UTF-8 with U+FFFD; drops pairs with an empty side."""

  def fix(features):
    return {key: tf.strings.unicode_transcode(
        features[key], "UTF-8", "UTF-8", errors="replace",
        replace_control_characters=False) for key in ("inputs", "targets")}

  def both_sides(features):
    return tf.reduce_all([
        tf.strings.length(tf.strings.strip(features[key])) > 0
        for key in ("inputs", "targets")])

  dataset = dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.filter(both_sides)


def drop_empty_tokens(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Drops pairs whose text tokenized to nothing (e.g. only characters the
  tokenizer's normalizer removes)."""
  return dataset.filter(lambda x: tf.logical_and(
      tf.size(x["inputs"]) > 0, tf.size(x["targets"]) > 0))


def finetuning_preprocessors(pre: Sequence[Callable] = (),
                             tokenized: Sequence[Callable] = (),
                             bos_id: Optional[int] = None) -> list[Callable]:
  """`pre` makes `inputs`/`targets` strings; `tokenized` runs on token ids,
  before the special tokens are added (`bos_id`: `<s>` before the inputs,
  None: none)."""
  return [*pre, clean_pairs, seqio.preprocessors.tokenize, drop_empty_tokens,
          *tokenized, preprocessors.add_special_tokens_after_trim(bos_id)]


def _register(name: str, source: seqio.DataSource,
              vocabulary: seqio.Vocabulary, pre: Sequence[Callable],
              tokenized: Sequence[Callable] = ()) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=finetuning_preprocessors(
          pre, tokenized, pretraining.encoder_bos_id(vocabulary)),
      output_features=pretraining.output_features(vocabulary), metric_fns=[])


@seqio.map_over_dataset
def title_from_lead(features: dict) -> dict[str, tf.Tensor]:
  """An article (`inputs`: its text) → its first paragraph and title."""
  lead = tf.strings.regex_replace(features["inputs"], r"\n(?s:.*)", "")
  return {"inputs": lead, "targets": features["targets"]}


def first_sentences(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """One example per paragraph: its first sentence (up to the first `.`,
  `!` or `?` followed by a space; the whole paragraph if there is none) as
  both `inputs` and `targets`."""

  def split(features):
    paragraphs = tf.strings.split(features["text"], "\n")
    sentences = tf.strings.regex_replace(paragraphs, r"^(.*?[.!?])\s.*$",
                                         r"\1")
    return tf.data.Dataset.from_tensor_slices(
        {"inputs": sentences, "targets": sentences})

  return dataset.flat_map(split)


def mask_tokens(mask_id: int, ratio: float) -> Callable:
  """Replaces `ratio` of the input tokens (in expectation) by `mask_id`, one
  for one. The choice is seeded by the target text, so an example is noised
  the same way on every run and every epoch. `inputs_pretokenized` is
  dropped: it would no longer describe the inputs."""

  @seqio.map_over_dataset
  def mask(features):
    tokens = features["inputs"]
    seed = tf.stack([tf.strings.to_hash_bucket_fast(
        features["targets_pretokenized"], 2**31 - 1), tf.constant(0, tf.int64)])
    chosen = tf.random.stateless_uniform(tf.shape(tokens), seed) < ratio
    kept = {k: v for k, v in features.items() if k != "inputs_pretokenized"}
    return {**kept, "inputs": tf.where(chosen, mask_id, tokens)}

  return mask


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
