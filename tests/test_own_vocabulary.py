"""The vocabulary as one setting that travels with the run (`VOCABULARY`):
own SentencePiece model → pretrain → fine-tune → generate → export with no
gin of our own and no vocabulary flag after the first command; bad
vocabulary paths fail by name before anything compiles."""

import json
import os
import subprocess
import sys

import pytest
import transformers

import tasks
from elmer_jax import run_config
from elmer_jax.data import vocabularies
from tasks import finetuning, pretraining
from tests.helpers import subprocess_env

ENV = subprocess_env(1, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
SHORT = ["--gin.loop.TrainConfig.steps=2", "--gin.loop.TrainConfig.batch_size=4",
         "--gin.loop.TrainConfig.log_every=1",
         "--gin.loop.TrainConfig.checkpoint_every=2"]


def run(module, *args, timeout=600, check=True):
  result = subprocess.run([sys.executable, "-m", module, *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=ENV)
  if check:
    assert result.returncode == 0, result.stderr[-4000:]
  return result


@pytest.fixture
def restore_tasks():
  """In-process tests that set a vocabulary leave the default one behind."""
  yield
  pretraining._DEFAULT_VOCABULARY.clear()  # pylint: disable=protected-access
  pretraining.register_pretraining_tasks()
  finetuning.register_finetuning_tasks()


@pytest.mark.slow  # Over a minute: five commands, two training runs.
@pytest.mark.integration
def test_own_sentencepiece_travels_from_pretraining_to_export(tmp_path):
  prefix = tmp_path / "own" / "spm"
  prefix.parent.mkdir()  # train_vocab makes it itself once issue 14 lands.
  run("elmer_jax.data.train_vocab", f"--input={pretraining.SAMPLE_JSONL}",
      "--input_format=jsonl", f"--model_prefix={prefix}", "--vocab_size=600")
  own = f"{prefix}.model"
  pre, tuned, exported = tmp_path / "pre", tmp_path / "ft", tmp_path / "hf"
  run("elmer_jax.train", "--gin_file=experiments/demo_sample_tiny.gin",
      f"--gin.VOCABULARY='{own}'", f"--model_dir={pre}", *SHORT)
  assert os.path.exists(pre / "vocabulary" / "spm.model")
  # From here on: no vocabulary flag, no gin of our own.
  run("elmer_jax.train", "--gin_file=experiments/finetune_sample_tiny.gin",
      f"--gin.INIT_CHECKPOINT='{pre}'", f"--model_dir={tuned}", *SHORT,
      "--gin.evaluation.EvalConfig.every=2",
      "--gin.evaluation.EvalConfig.batches=1")
  text = (tuned / "config.gin").read_text()
  assert "config.ElmerConfig.vocab_size = 600" in text
  assert "config.ElmerConfig.soft_exit = True" in text
  assert os.path.exists(tuned / "vocabulary" / "spm.model")

  inputs, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
  inputs.write_text("The city is the capital of the country.\n"
                    "He was born in London.\n")
  run("elmer_jax.generate", f"--model_dir={tuned}", f"--input_file={inputs}",
      f"--output_file={out}", "--output_format=jsonl", "--max_length=8")
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(rows) == 2 and all(max(r["tokens"] + [0]) < 600 for r in rows)

  run("elmer_jax.export", f"--model_dir={tuned}", f"--output_dir={exported}")
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(exported))
  vocabulary = vocabularies.load_vocabulary(own)
  line = "He was born in London."
  assert tokenizer(line)["input_ids"] == (
      [vocabulary.tokenizer.bos_id()] + list(vocabulary.encode(line))
      + [vocabulary.eos_id])
  assert len(tokenizer) == 600


def test_bad_vocabulary_paths_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.model.*does not exist"):
    vocabularies.load_vocabulary(str(tmp_path / "nowhere.model"))
  fake = tmp_path / "fake.model"
  fake.write_bytes(b"\xff\x00 definitely not a protobuf \x07\x08")
  with pytest.raises(ValueError, match="fake.model.*not a SentencePiece"):
    vocabularies.load_vocabulary(str(fake))
  bpe = tmp_path / "bpe"
  bpe.mkdir()
  (bpe / "vocab.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="without merges.txt"):
    vocabularies.load_vocabulary(str(bpe))


@pytest.mark.integration
def test_a_bad_vocabulary_stops_the_trainer_before_compiling(tmp_path):
  result = run("elmer_jax.train", "--gin_file=experiments/demo_sample_tiny.gin",
               f"--gin.VOCABULARY='{tmp_path / 'missing.model'}'",
               f"--model_dir={tmp_path / 'run'}", check=False, timeout=300)
  assert result.returncode != 0
  assert "missing.model' does not exist" in result.stderr
  assert not os.path.exists(tmp_path / "run")


def test_vocabulary_decides_the_model_ids_and_a_mismatch_is_named(
    restore_tasks):
  del restore_tasks
  # models/tiny.gin binds vocab_size 1024 and mask_id 1023: the vocabulary
  # (8,000 pieces, <pad>=0 </s>=1 <unk>=2 <s>=3 <mask>=4) decides instead.
  vocabulary = run_config.parse_for_training(
      ["models/tiny.gin"], [f"VOCABULARY = {pretraining.SAMPLE_SPM!r}"],
      use_vocabulary=tasks.use_vocabulary)
  model = run_config.gin_utils.macro("MODEL_CONFIG")
  assert vocabulary.vocab_size == 8000
  assert (model.vocab_size, model.pad_id, model.eos_id, model.unk_id,
          model.bos_id, model.mask_id) == (8000, 0, 1, 2, 3, 4)
  with pytest.raises(ValueError, match=r"VOCABULARY=.*mask_id=5 but the "
                                       r"vocabulary has mask id 4"):
    run_config.parse_for_training(
        ["models/tiny.gin"], [f"VOCABULARY = {pretraining.SAMPLE_SPM!r}",
                              "config.ElmerConfig.mask_id = 5"],
        use_vocabulary=tasks.use_vocabulary)
