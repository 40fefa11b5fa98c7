"""The bundled sample, its markup cleaner, and SentencePiece training."""

import json
import os
import subprocess
import sys

import pytest
import seqio
import sentencepiece as spm

from elmer_jax.data import sentencepiece_training
from tasks import pretraining
from tasks.data import build_wiki_sample
from tests.helpers import third_party_noise


def test_markup_cleaner_on_hand_written_wikitext():
  wikitext = (
      "{{Infobox person|name=X|born={{birth date|1900|1|1}}}}\n"
      "'''Ada''' was a [[mathematician]] and [[Writer|writer]]"
      "<ref name=a>Some source</ref> who worked on the "
      "[[Analytical Engine]].<ref>Another</ref>\n"
      "== Early life ==\n"
      "[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]\n"
      "{| class=wikitable\n| cell || cell\n|}\n"
      "She was born in London&nbsp;in 1815 (; ) and had ''one'' child.\n"
      "* a list item that is dropped because it is a list item\n"
      "<!-- hidden comment --><br/>")
  assert build_wiki_sample.clean_markup(wikitext) == (
      "Ada was a mathematician and writer who worked on the Analytical "
      "Engine.\n"
      "She was born in London in 1815 and had one child.")


def test_bundled_sample_is_clean_real_text():
  size = os.path.getsize(pretraining.SAMPLE_JSONL)
  assert size <= 5_000_000
  with open(pretraining.SAMPLE_JSONL) as f:
    articles = [json.loads(line) for line in f]
  assert len(articles) >= 90
  for article in articles:
    assert article["title"] and len(article["text"]) >= 500
    for leftover in ("{{", "[[", "<ref", "'''", "&nbsp;"):
      assert leftover not in article["text"], (article["title"], leftover)


def test_bundled_vocabulary_has_elmer_ids_and_covers_the_sample():
  vocab = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  assert vocab.vocab_size == 8000
  assert sentencepiece_training.special_ids(pretraining.SAMPLE_SPM) == (
      sentencepiece_training.SPECIAL_IDS)
  with open(pretraining.SAMPLE_JSONL) as f:
    text = json.loads(f.readline())["text"].split("\n")[0]
  ids = vocab.encode(text)
  assert 2 not in ids  # No <unk>: byte fallback covers everything.
  assert vocab.decode(ids) == text


def _sentences(count):
  with open(pretraining.SAMPLE_JSONL) as f:
    docs = [json.loads(line)["text"] for line in f]
  return list(sentencepiece_training.sentences(docs))[:count]


def test_train_sentencepiece_records_special_ids(tmp_path):
  sentences = _sentences(400)
  path = sentencepiece_training.train_sentencepiece(
      sentences, str(tmp_path / "small"), 400)
  sp = spm.SentencePieceProcessor(model_file=path)
  assert sp.get_piece_size() == 400
  assert [sp.id_to_piece(i) for i in range(5)] == [
      "<pad>", "</s>", "<unk>", "<s>", "<mask>"]
  for sentence in sentences[:20]:
    assert sp.decode(sp.encode(sentence)) == sentence


def test_special_ids_rejects_other_layouts(tmp_path):
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_sentences(300)),
      model_prefix=str(tmp_path / "t5ish"), vocab_size=300, minloglevel=2)
  path = str(tmp_path / "t5ish.model")
  with pytest.raises(ValueError, match=rf"{path} has pad id -1"):
    sentencepiece_training.special_ids(path)


@pytest.mark.integration
def test_train_vocab_command(tmp_path):
  corpus = tmp_path / "docs.jsonl"
  corpus.write_text("".join(json.dumps({"text": s}) + "\n"
                            for s in _sentences(300)))
  result = subprocess.run(
      [sys.executable, "-m", "elmer_jax.data.train_vocab",
       f"--input={corpus}", "--input_format=jsonl",
       f"--model_prefix={tmp_path / 'cli'}", "--vocab_size=400"],
      capture_output=True, text=True, check=True, timeout=600)
  assert "cli.model" in result.stdout
  assert not third_party_noise(result.stderr), result.stderr[-2000:]
  assert sentencepiece_training.special_ids(str(tmp_path / "cli.model"))


def test_missing_input_file_is_named(tmp_path):
  missing = str(tmp_path / "absent.txt")
  with pytest.raises(FileNotFoundError, match="absent.txt"):
    list(sentencepiece_training.read_documents([missing]))


def test_documents_of_a_task():
  import tasks  # pylint: disable=unused-import  (registers the tasks)
  documents = list(sentencepiece_training.task_documents(
      "sample_wiki_elmer", max_documents=5))
  assert len(documents) == 5 and all(len(d) > 500 for d in documents)


@pytest.mark.integration
def test_train_vocab_from_a_task(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "elmer_jax.data.train_vocab",
       "--task=sample_wiki_elmer", "--max_documents=10",
       f"--model_prefix={tmp_path / 'task'}", "--vocab_size=400"],
      capture_output=True, text=True, check=True, timeout=600)
  assert "task.model" in result.stdout


@pytest.mark.integration
def test_train_vocab_creates_its_output_folder(tmp_path):
  corpus = tmp_path / "docs.txt"
  corpus.write_text("".join(s + "\n" for s in _sentences(300)))
  prefix = tmp_path / "not" / "yet" / "there" / "spm"
  result = subprocess.run(
      [sys.executable, "-m", "elmer_jax.data.train_vocab",
       f"--input={corpus}", f"--model_prefix={prefix}", "--vocab_size=400"],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert sentencepiece_training.special_ids(f"{prefix}.model")


def test_undecodable_line_names_the_file_and_byte_offset(tmp_path):
  corpus = tmp_path / "latin1.txt"
  first = "A fine first line.\n".encode()
  corpus.write_bytes(first + "Caf\xe9 au lait.\n".encode("latin-1"))
  with pytest.raises(ValueError, match=rf"latin1.txt: the line at byte offset "
                     rf"{len(first)} is not UTF-8 \(byte {len(first) + 3}"):
    list(sentencepiece_training.read_documents([str(corpus)]))


def test_jsonl_line_without_the_field_is_named(tmp_path):
  corpus = tmp_path / "docs.jsonl"
  corpus.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
  with pytest.raises(ValueError, match=r"docs.jsonl: the line at byte offset "
                     r"15 is not a JSON object with a 'text' field"):
    list(sentencepiece_training.read_documents([str(corpus)], "jsonl"))
