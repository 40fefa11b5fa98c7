"""Pretraining tasks through the real seqio code path.

C4 and Wikipedia run over `tfds.testing.mock_data`; the sample and local-file
tasks over real text.
"""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

import tasks  # pylint: disable=unused-import  (registers the tasks)
from elmer_jax.data import pipeline, preprocessors
from elmer_jax.data.vocab_tables import special_ids
from tasks import pretraining

LENGTHS = {"inputs": 64, "targets": 64}
ONE_PROCESS = seqio.ShardInfo(index=0, num_shards=1)


def _check_batch(batch, vocab):
  ids = special_ids(vocab)
  for key in ("encoder_input_tokens", "decoder_input_tokens",
              "decoder_target_tokens", "decoder_loss_weights"):
    assert batch[key].dtype == np.int32, key
    assert batch[key].shape[1] == 64, key
  weights = batch["decoder_loss_weights"]
  for row in range(weights.shape[0]):
    n = int(weights[row].sum())
    assert n > 1
    # Real tokens form a prefix: no pad inside the targets.
    np.testing.assert_array_equal(weights[row, :n], 1)
    np.testing.assert_array_equal(weights[row, n:], 0)
    targets = batch["decoder_target_tokens"][row]
    assert ids["pad"] not in targets[:n]
    assert targets[n - 1] == ids["eos"]
    np.testing.assert_array_equal(targets[n:], ids["pad"])
    dec = batch["decoder_input_tokens"][row]
    assert dec[0] == ids["bos"]
    np.testing.assert_array_equal(dec[1:n], ids["mask"])
    np.testing.assert_array_equal(dec[n:], ids["mask"])  # Spare slots.
    enc = batch["encoder_input_tokens"][row]
    assert enc[0] != ids["pad"] and ids["eos"] in enc


def _batches(task, count=2, batch=4, seed=0, split="train"):
  vocab = seqio.get_mixture_or_task(task).output_features[
      "targets"].vocabulary
  dataset = pipeline.get_dataset(task, LENGTHS, split, batch,
                                 pipeline.converter_for(task), seed=seed,
                                 shard=ONE_PROCESS)
  iterator = pipeline.ResumableIterator({ONE_PROCESS: dataset})
  return [next(iterator) for _ in range(count)], vocab


def test_sample_task_reconstructs_real_wikipedia_text():
  batches, vocab = _batches("sample_wiki_elmer")
  with open(pretraining.SAMPLE_JSONL) as f:
    corpus = " ".join(json.loads(line)["text"] for line in f)
  corpus = " ".join(corpus.split())
  for batch in batches:
    _check_batch(batch, vocab)
    for row in range(batch["decoder_target_tokens"].shape[0]):
      n = int(batch["decoder_loss_weights"][row].sum())
      text = vocab.decode(batch["decoder_target_tokens"][row, :n - 1].tolist())
      # Targets are the original text: a verbatim piece of the corpus.
      assert " ".join(text.split())[:80] in corpus


@pytest.mark.parametrize("task", ["c4_en_elmer", "wikipedia_en_elmer",
                                  "c4_wiki_elmer"])
def test_tfds_tasks_on_mock_data(task):
  with tfds.testing.mock_data(num_examples=16):
    batches, vocab = _batches(task, count=2)
  for batch in batches:
    _check_batch(batch, vocab)


def _write(path, lines, binary=False):
  with open(path, "wb" if binary else "w") as f:
    for line in lines:
      f.write(line + (b"\n" if binary else "\n"))
  return str(path)


def test_local_files_handle_empty_bad_utf8_and_long_documents(tmp_path):
  long_doc = " ".join(f"Sentence number {i} is here." for i in range(200))
  text = _write(tmp_path / "docs.txt", [
      b"The first document is short. It has two sentences.",
      b"",
      b"   ",
      b"Broken bytes \xff\xfe in the middle. Still a document.",
      long_doc.encode()], binary=True)
  name = pretraining.register_text_files_task("test_local_text", [text])
  vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
  examples = list(seqio.get_mixture_or_task(name).get_dataset(
      LENGTHS, split="train", shuffle=False, seed=0).as_numpy_iterator())
  targets = [vocab.decode(ex["targets"].tolist()) for ex in examples]
  assert not any(t.strip() == "" for t in targets)  # Empty documents dropped.
  # The invalid bytes became U+FFFD (which the SentencePiece normalizer then
  # drops); the rest of the document survives.
  assert any("Broken bytes" in t and "in the middle" in t for t in targets)
  long_parts = [t for t in targets if "Sentence number" in t]
  assert len(long_parts) > 10  # Split into chunks, not truncated.
  assert all(len(ex["targets"]) <= 64 for ex in examples)


def test_jsonl_files_task(tmp_path):
  path = _write(tmp_path / "docs.jsonl", [
      json.dumps({"text": "A JSON document. With two sentences."}),
      "not json at all",
      json.dumps({"title": "no text field"}),
      json.dumps({"text": "Another one here."})])
  name = pretraining.register_text_files_task("test_local_jsonl", [path],
                                              file_format="jsonl")
  vocab = seqio.get_mixture_or_task(name).output_features["targets"].vocabulary
  texts = sorted(vocab.decode(ex["targets"].tolist()) for ex in
                 seqio.get_mixture_or_task(name).get_dataset(
                     LENGTHS, split="train", shuffle=False,
                     seed=0).as_numpy_iterator())
  assert texts == ["A JSON document. With two sentences.", "Another one here."]


def test_missing_files_and_vocabulary_are_named(tmp_path):
  missing = str(tmp_path / "nope-*.txt")
  with pytest.raises(FileNotFoundError, match="nope-"):
    pretraining.register_text_files_task("test_missing", [missing])
  with pytest.raises(ValueError, match="file_format='csv'"):
    pretraining.register_text_files_task("test_missing", [missing],
                                         file_format="csv")


def test_clean_text_replaces_invalid_utf8_and_drops_empty():
  docs = tf.data.Dataset.from_tensor_slices(
      {"targets": [b"ok \xff\xfe bytes", b"", b"  \n ", b"fine"]})
  cleaned = [x["targets"].decode("utf-8") for x in
             preprocessors.clean_text(docs).as_numpy_iterator()]
  assert cleaned == ["ok \ufffd\ufffd bytes", "fine"]


def test_load_vocabulary_names_the_missing_path(tmp_path):
  from elmer_jax.data.vocabularies import load_vocabulary
  with pytest.raises(FileNotFoundError, match="nowhere.model"):
    load_vocabulary(str(tmp_path / "nowhere.model"))
  with pytest.raises(FileNotFoundError, match="neither a SentencePiece"):
    load_vocabulary(str(tmp_path / "nowhere"))
  assert load_vocabulary(pretraining.SAMPLE_SPM).vocab_size == 8000
