"""Fine-tuning tasks through the real seqio code path.

XSUM and SQuAD run over `tfds.testing.mock_data`, the file tasks over files
written here, the sample tasks over the bundled Wikipedia sample.
"""

import json
import re

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax.data import pair_preprocessors, pipeline
from elmer_jax.data.vocab_tables import special_ids
from tasks import finetuning, pretraining

LENGTHS = {"inputs": 256, "targets": 64}
ONE_PROCESS = seqio.ShardInfo(index=0, num_shards=1)


def _vocab(task: str) -> seqio.Vocabulary:
  return seqio.get_mixture_or_task(task).output_features["targets"].vocabulary


def _examples(task, split="train", lengths=None, seed=None):
  dataset = seqio.get_mixture_or_task(task).get_dataset(
      lengths or LENGTHS, split=split, shuffle=False, seed=seed,
      use_cached=False, try_in_mem_cache=False)
  return list(dataset.as_numpy_iterator())


def _squash(text) -> str:
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return " ".join(text.split())


def _decode(vocab, tokens) -> str:
  """The text before the final `</s>` (which every feature must end with)."""
  assert tokens[-1] == special_ids(vocab)["eos"]
  return vocab.decode(tokens[:-1].tolist())


def _check_tokens(example, vocab, lengths):
  ids = special_ids(vocab)
  for key in ("inputs", "targets"):
    tokens = example[key]
    assert 2 <= len(tokens) <= lengths[key], key
    assert tokens[-1] == ids["eos"] and ids["eos"] not in tokens[:-1], key
    assert ids["pad"] not in tokens, key
  assert example["inputs"][0] == ids["bos"]  # BART's <s> tokens </s>.
  assert ids["bos"] not in example["inputs"][1:]


def _check_batches(task, split="train", batch=4, count=2):
  """Model batches: `<s>` + `<mask>`... decoder input, targets end in `</s>`."""
  ids = special_ids(_vocab(task))
  dataset = pipeline.get_dataset(task, LENGTHS, split, batch,
                                 pipeline.converter_for(task), seed=0,
                                 shard=ONE_PROCESS)
  batches = list(dataset.take(count).as_numpy_iterator())
  assert len(batches) == count
  for b in batches:
    assert set(b) == {"encoder_input_tokens", "decoder_input_tokens",
                      "decoder_target_tokens", "decoder_loss_weights"}
    assert b["decoder_input_tokens"].shape == (batch, LENGTHS["targets"])
    assert b["encoder_input_tokens"].shape == (batch, LENGTHS["inputs"])
    for row in range(batch):
      n = int(b["decoder_loss_weights"][row].sum())
      assert n >= 2
      dec = b["decoder_input_tokens"][row]
      assert dec[0] == ids["bos"]
      np.testing.assert_array_equal(dec[1:n], ids["mask"])
      np.testing.assert_array_equal(dec[n:], ids["mask"])  # Spare slots.
      assert b["decoder_target_tokens"][row, n - 1] == ids["eos"]
      assert ids["eos"] in b["encoder_input_tokens"][row]


def test_xsum_pairs_document_with_summary_and_trims():
  short = {"inputs": 6, "targets": 64}
  with tfds.testing.mock_data(num_examples=8):
    raw = [(ex["document"], ex["summary"]) for ex in tfds.as_numpy(
        tfds.load(finetuning.XSUM_TFDS, split="validation"))]
    examples = _examples("xsum_elmer", "validation", short)
    _check_batches("xsum_elmer", "validation")
  vocab = _vocab("xsum_elmer")
  expected = [(d, s) for d, s in raw if d.strip() and s.strip()]
  assert len(expected) >= 6
  assert [(ex["inputs_pretokenized"], ex["targets_pretokenized"])
          for ex in examples] == expected
  for ex, (document, summary) in zip(examples, expected):
    _check_tokens(ex, vocab, short)
    assert _squash(_decode(vocab, ex["targets"])) == _squash(summary)
    if len(vocab.encode(document.decode())) >= short["inputs"]:
      assert len(ex["inputs"]) == short["inputs"]  # Trimmed, then </s>.
    assert _squash(document).startswith(_squash(_decode(vocab, ex["inputs"])))


def test_squad_question_generation_on_mock_data():
  with tfds.testing.mock_data(num_examples=8):
    raw = list(tfds.as_numpy(tfds.load(finetuning.SQUAD_TFDS, split="train")))
    examples = _examples("squad_qg_elmer")
    _check_batches("squad_qg_elmer")
  vocab = _vocab("squad_qg_elmer")
  by_question = {ex["question"]: ex for ex in raw}
  assert len(examples) >= 6
  for ex in examples:
    _check_tokens(ex, vocab, LENGTHS)
    squad = by_question[ex["targets_pretokenized"]]
    answer = squad["answers"]["text"][0]
    assert _squash(_decode(vocab, ex["targets"])) == _squash(squad["question"])
    assert ex["inputs_pretokenized"] == (answer + b" [SEP] " +
                                         squad["context"])
    assert _squash(_decode(vocab, ex["inputs"])) == _squash(
        answer + b" [SEP] " + squad["context"])


def test_squad_question_generation_takes_first_answer_drops_unanswered():
  def one(answers, question):
    return tf.data.Dataset.from_tensors({
        "context": tf.constant("Paris is the capital of France."),
        "question": tf.constant(question),
        "answers": {"text": tf.constant(answers, tf.string)}})

  pairs = []
  for answers, question in ((["Paris", "paris"], "What is the capital?"),
                            ([], "Unanswerable?"), ([" "], "Blank answer?")):
    dataset = pair_preprocessors.clean_pairs(
        pair_preprocessors.squad_question_generation(one(answers, question)))
    pairs += [(ex["inputs"].decode(), ex["targets"].decode())
              for ex in dataset.as_numpy_iterator()]
  assert pairs == [("Paris [SEP] Paris is the capital of France.",
                    "What is the capital?")]


def _write(path, lines):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  return str(path)


def _pairs(task, split="train", lengths=None):
  return sorted((ex["inputs_pretokenized"].decode(),
                 ex["targets_pretokenized"].decode())
                for ex in _examples(task, split, lengths))


def test_src_tgt_files_drop_empty_lines_and_trim(tmp_path):
  long_target = " ".join(f"word{i}" for i in range(300))
  _write(tmp_path / "train-0.src", ["Hello source one.", "", "Third source.",
                                    "  ", "Long one."])
  _write(tmp_path / "train-0.tgt", ["Target one.", "Target two.", "",
                                    "Target four.", long_target])
  _write(tmp_path / "train-1.src", ["Second file source."])
  _write(tmp_path / "train-1.tgt", ["Second file target."])
  dev = _write(tmp_path / "dev.src", ["Dev source."])
  _write(tmp_path / "dev.tgt", ["Dev target."])
  name = finetuning.register_pairs_task(
      "test_pairs_src_tgt", [str(tmp_path / "train-*.src")], [dev])
  assert name == "test_pairs_src_tgt"
  assert set(seqio.get_mixture_or_task(name).splits) == {"train",
                                                         "validation"}
  vocab = _vocab(name)
  assert _pairs(name) == [("Hello source one.", "Target one."),
                          ("Long one.", long_target),
                          ("Second file source.", "Second file target.")]
  assert _pairs(name, "validation") == [("Dev source.", "Dev target.")]
  for ex in _examples(name):
    _check_tokens(ex, vocab, LENGTHS)
    decoded = _decode(vocab, ex["targets"])
    if ex["inputs_pretokenized"] == b"Long one.":
      assert len(ex["targets"]) == LENGTHS["targets"]
      assert long_target.startswith(decoded)
    else:
      assert decoded == ex["targets_pretokenized"].decode()
    assert _decode(vocab, ex["inputs"]) == ex["inputs_pretokenized"].decode()
  _check_batches(name, batch=2)


@pytest.mark.parametrize("src_lines,tgt_lines", [(3, 2), (2, 3)])
def test_src_tgt_line_count_mismatch_raises(tmp_path, src_lines, tgt_lines):
  src = _write(tmp_path / "train.src", [f"source {i}" for i in range(src_lines)])
  _write(tmp_path / "train.tgt", [f"target {i}" for i in range(tgt_lines)])
  name = finetuning.register_pairs_task("test_pairs_mismatch", [src])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="different numbers of lines"):
    _examples(name)


def test_pairs_files_errors_name_the_problem(tmp_path):
  good = _write(tmp_path / "train.src", ["a"])
  _write(tmp_path / "train.tgt", ["b"])
  missing = str(tmp_path / "nope-*.src")
  with pytest.raises(FileNotFoundError,
                     match=r"No validation data file matches .*nope-\*\.src"):
    finetuning.register_pairs_task("test_pairs_bad", [good], [missing])
  with pytest.raises(FileNotFoundError, match=r"No train data file .*nope-"):
    finetuning.register_pairs_task("test_pairs_bad", [missing],
                                   file_format="jsonl")
  orphan = _write(tmp_path / "orphan.src", ["a"])
  with pytest.raises(FileNotFoundError, match=r"orphan\.tgt"):
    finetuning.register_pairs_task("test_pairs_bad", [good], test_files=[orphan])
  with pytest.raises(ValueError, match=r"does not end in \.src"):
    finetuning.register_pairs_task("test_pairs_bad", [str(tmp_path / "*.tgt")])
  with pytest.raises(ValueError, match="file_format='csv'"):
    finetuning.register_pairs_task("test_pairs_bad", [good], file_format="csv")
  assert "test_pairs_bad" not in seqio.TaskRegistry.names()


def test_jsonl_pairs_with_configured_fields(tmp_path):
  path = _write(tmp_path / "pairs.jsonl", [
      json.dumps({"document": "A long document.", "summary": "Short."}),
      "not json",
      json.dumps({"document": "No summary field."}),
      json.dumps({"document": "Numbers count.", "summary": 42}),
      json.dumps({"document": "Empty summary.", "summary": ""}),
      json.dumps({"document": "Null summary.", "summary": None}),
      json.dumps({"document": "Ünïcödé text.", "summary": "Ünïcödé."})])
  name = finetuning.register_pairs_task(
      "test_pairs_jsonl", [path], file_format="jsonl",
      source_field="document", target_field="summary")
  assert _pairs(name) == [("A long document.", "Short."),
                          ("Numbers count.", "42"),
                          ("Ünïcödé text.", "Ünïcödé.")]
  vocab = _vocab(name)
  assert sorted(_decode(vocab, ex["targets"]) for ex in _examples(name)) == [
      "42", "Short.", "Ünïcödé."]


def test_tsv_pairs(tmp_path):
  path = _write(tmp_path / "pairs.tsv", [
      "Source one.\tTarget one.", "no tab here", "a\tb\tignored",
      "\tno source", "Source two.\t"])
  name = finetuning.register_pairs_task("test_pairs_tsv", [path],
                                        file_format="tsv")
  assert _pairs(name) == [("Source one.", "Target one."), ("a", "b")]


def test_pairs_files_gin(tmp_path):
  from elmer_jax import gin_utils
  path = _write(tmp_path / "data.jsonl", [
      json.dumps({"source": f"Source {i}.", "target": f"Target {i}."})
      for i in range(4)])
  gin_utils.parse(["data/pairs_files.gin"],
                  [f"TRAIN_FILES = ['{path}']", "VALIDATION_FILES = []",
                   "FILE_FORMAT = 'jsonl'"])
  name = gin_utils.macro("MIXTURE_OR_TASK_NAME")
  assert name == "pairs_files_elmer"
  assert _pairs(name) == [(f"Source {i}.", f"Target {i}.") for i in range(4)]


def _sample_articles() -> dict[str, str]:
  with open(pretraining.SAMPLE_JSONL, encoding="utf-8") as f:
    return {a["title"]: a["text"] for a in map(json.loads, f)}


def test_sample_title_task_maps_first_paragraph_to_title():
  articles = _sample_articles()
  vocab = _vocab("sample_title_elmer")
  titles = {}
  for split in ("train", "validation"):
    examples = _examples("sample_title_elmer", split)
    titles[split] = {ex["targets_pretokenized"].decode() for ex in examples}
    assert len(titles[split]) == len(examples)
    for ex in examples:
      _check_tokens(ex, vocab, LENGTHS)
      title = ex["targets_pretokenized"].decode()
      assert ex["inputs_pretokenized"].decode() == (
          articles[title].split("\n")[0])
      assert _squash(_decode(vocab, ex["targets"])) == _squash(title)
  assert titles["validation"] and not titles["train"] & titles["validation"]
  assert titles["train"] | titles["validation"] == set(articles)
  _check_batches("sample_title_elmer", "validation", batch=2)


def test_sample_sentence_denoise_task():
  articles = _sample_articles()
  vocab = _vocab("sample_sentence_denoise_elmer")
  mask = special_ids(vocab)["mask"]
  examples = _examples("sample_sentence_denoise_elmer", "validation",
                       {"inputs": 256, "targets": 256}, seed=1)
  held_out = {ex["targets_pretokenized"].decode() for ex in _examples(
      "sample_title_elmer", "validation")}
  paragraphs = [p for title in held_out for p in articles[title].split("\n")]
  assert len(examples) == len(paragraphs)  # One sentence per paragraph.
  masked = total = 0
  for ex in examples:
    sentence = ex["targets_pretokenized"].decode()
    # The first sentence of a held-out paragraph.
    assert any(p == sentence or (p.startswith(sentence) and sentence[-1] in
                                 ".!?" and p[len(sentence)].isspace())
               for p in paragraphs)
    assert not re.search(r"[.!?]\s", sentence)
    inputs, targets = ex["inputs"], ex["targets"]
    assert "inputs_pretokenized" not in ex
    assert mask not in targets
    assert inputs[0] == special_ids(vocab)["bos"]  # BART's <s> tokens </s>.
    inputs = inputs[1:]
    # Masked one for one: same length, equal wherever not masked.
    assert len(inputs) == len(targets)
    kept = inputs != mask
    np.testing.assert_array_equal(inputs[kept], targets[kept])
    assert kept[-1]  # </s> is never masked.
    masked += int((~kept).sum())
    total += len(inputs) - 1
  assert 0.1 < masked / total < 0.2
  # The masks depend on the sentence, not on the seed.
  again = _examples("sample_sentence_denoise_elmer", "validation",
                    {"inputs": 256, "targets": 256}, seed=2)
  for a, b in zip(examples, again):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  _check_batches("sample_sentence_denoise_elmer")
