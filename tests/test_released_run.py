"""A released-like Hugging Face directory (stock transformers BART saved with
`save_pretrained`, byte-level BPE trained on the sample) → `import_hf` → a run
directory that generates what the original pipeline computes, fine-tunes,
and exports again, with no gin of our own."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
import transformers

from elmer_jax.export import hf_weights, importing
from elmer_jax.model.config import ElmerConfig
from tests import hf_reference
from tests.helpers import subprocess_env, third_party_noise

TEXTS = ["Paris is the capital of France.",
         "The river flows to the sea, and the city grew along it.",
         "He was born in London and studied music.",
         "Anarchism is a political philosophy."]
SLOTS = 12
SUBPROCESS_ENV = subprocess_env(1, HF_HUB_OFFLINE="1",
                                TRANSFORMERS_OFFLINE="1")


def vocabulary_binding(run_dir) -> str:
  """What the run's config.gin binds VOCABULARY to (gin wraps long lines)."""
  text = (run_dir / "config.gin").read_text().replace("\\\n", " ")
  return re.search(r"^VOCABULARY =\s*'([^']*)'", text, re.M).group(1)


def run(module, *args, timeout=600):
  result = subprocess.run([sys.executable, "-m", module, *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=SUBPROCESS_ENV)
  assert result.returncode == 0, result.stderr[-4000:]
  noise = third_party_noise(result.stderr)  # Each command's console is ours.
  assert not noise, (module, noise[:5])
  return result


@pytest.fixture(scope="module")
def released(bpe_dir, tmp_path_factory):
  """(directory, HF model, its ElmerConfig): what a user downloads."""
  size = len(json.loads((bpe_dir / "vocab.json").read_text()))
  config = ElmerConfig(vocab_size=size, d_model=32, num_heads=4, d_ff=64,
                       encoder_layers=2, decoder_layers=3, max_positions=64,
                       mask_id=size - 1, dropout_rate=0.0,
                       attention_dropout_rate=0.0, activation_dropout_rate=0.0)
  model = hf_reference.random_bart(config, seed=12)
  path = tmp_path_factory.mktemp("released") / "elmer"
  model.save_pretrained(str(path))
  for name in ("vocab.json", "merges.txt"):
    shutil.copyfile(bpe_dir / name, path / name)
  return path, model, config


def original_pipeline(path, model, config, texts):
  """The released code's generation, written with transformers: BART's
  tokenizer `<s> … </s>`, decoder input `<s>` + `<mask>` slots, a
  bidirectional decoder, argmax of the last layer, cut at `</s>`."""
  tokenizer = transformers.BartTokenizer(str(path / "vocab.json"),
                                         str(path / "merges.txt"))
  outputs = []
  for text in texts:
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    decoder = [[config.bos_id] + [config.mask_id] * (SLOTS - 1)]
    logits = hf_reference.bidirectional_logits(model, np.array([ids]),
                                               np.array(decoder), config.pad_id)
    tokens = logits[0].argmax(-1).tolist()
    outputs.append(tokens[:tokens.index(2)] if 2 in tokens else tokens)
  return outputs


def generate(run_dir, tmp_path, name="out.jsonl"):
  inputs = tmp_path / "in.txt"
  inputs.write_text("\n".join(TEXTS) + "\n")
  out = tmp_path / name
  run("elmer_jax.generate", f"--model_dir={run_dir}", f"--input_file={inputs}",
      f"--output_file={out}", "--output_format=jsonl",
      f"--max_length={SLOTS}", "--max_input_length=64", "--batch_size=2")
  return [json.loads(line)["tokens"] for line in out.read_text().splitlines()]


@pytest.mark.integration
def test_import_then_generate_matches_the_original_pipeline(released,
                                                            tmp_path):
  path, model, config = released
  run_dir = tmp_path / "run"
  run("elmer_jax.import_hf", f"--hf_dir={path}", f"--output_dir={run_dir}")
  assert {"config.gin", "checkpoints", "vocabulary"} <= set(
      os.listdir(run_dir))
  assert sorted(os.listdir(run_dir / "vocabulary")) == ["merges.txt",
                                                        "vocab.json"]
  assert vocabulary_binding(run_dir) == str(run_dir / "vocabulary")
  ours = generate(run_dir, tmp_path)
  expected = original_pipeline(path, model, config, TEXTS)
  assert ours == expected
  assert any(len(tokens) > 2 for tokens in expected)

  again = subprocess.run(
      [sys.executable, "-m", "elmer_jax.import_hf", f"--hf_dir={path}",
       f"--output_dir={run_dir}"], capture_output=True, text=True,
      timeout=300, env=SUBPROCESS_ENV)
  assert again.returncode != 0 and "exists" in again.stderr
  assert ours == generate(run_dir, tmp_path, "again.jsonl")  # Untouched.


LOAD_AND_GENERATE = """
import json, sys, torch, transformers
path, texts, slots = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
    path, trust_remote_code=True).eval()
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
rows = []
for text in texts:
  batch = tokenizer([text], return_tensors="pt")
  out = model.generate(batch["input_ids"], batch["attention_mask"],
                       max_length=slots, return_dict_in_generate=True)
  rows.append([batch["input_ids"][0].tolist(),
               out.sequences[0, :out.lengths[0]].tolist()])
print(json.dumps(rows))
"""


@pytest.mark.slow  # Over a minute: import, fine-tune, generate, export, load.
def test_import_finetune_generate_export_load(released, tmp_path):
  path, _, config = released
  run_dir, tuned, exported = (tmp_path / "run", tmp_path / "ft",
                              tmp_path / "hf")
  run("elmer_jax.import_hf", f"--hf_dir={path}", f"--output_dir={run_dir}")
  pairs = tmp_path / "pairs.tsv"
  pairs.write_text("".join(f"{t}\t{t.split(',')[0]}\n" for t in TEXTS * 4))
  run("elmer_jax.train", "--gin_file=runs/finetune.gin",
      "--gin_file=data/pairs_files.gin", f"--model_dir={tuned}",
      f"--gin.INIT_CHECKPOINT='{run_dir}'",
      f"--gin.TRAIN_FILES=['{pairs}']", f"--gin.VALIDATION_FILES=['{pairs}']",
      "--gin.FILE_FORMAT='tsv'", "--gin.loop.TrainConfig.steps=3",
      "--gin.loop.TrainConfig.batch_size=4",
      "--gin.loop.TrainConfig.encoder_length=32",
      "--gin.loop.TrainConfig.decoder_length=16",
      "--gin.loop.TrainConfig.log_every=1",
      "--gin.loop.TrainConfig.checkpoint_every=3",
      "--gin.evaluation.EvalConfig.every=3",
      "--gin.evaluation.EvalConfig.batches=1")
  # The fine-tune took the imported model and vocabulary, nothing restated.
  gin_text = (tuned / "config.gin").read_text()
  assert f"config.ElmerConfig.vocab_size = {config.vocab_size}" in gin_text
  assert "config.ElmerConfig.soft_exit = True" in gin_text
  assert vocabulary_binding(tuned) == str(tuned / "vocabulary")
  ours = generate(tuned, tmp_path)
  result = run("elmer_jax.evaluate", f"--model_dir={tuned}",
               "--gin_file=runs/eval.gin",
               "--gin.generation_eval.GenerationEvalConfig.max_examples=4",
               "--gin.generation_eval.GenerationEvalConfig.batch_size=4",
               f"--gin.decoding.DecodeConfig.max_length={SLOTS}")
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["metrics"]["examples"] == 4 and "rougeL" in report["metrics"]

  run("elmer_jax.export", f"--model_dir={tuned}", f"--output_dir={exported}",
      f"--max_length={SLOTS}")
  result = subprocess.run(
      [sys.executable, "-c", LOAD_AND_GENERATE, str(exported),
       json.dumps(TEXTS), str(SLOTS)], capture_output=True, text=True,
      timeout=300, env=SUBPROCESS_ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(result.stdout.strip().splitlines()[-1])
  tokenizer = transformers.BartTokenizer(str(path / "vocab.json"),
                                         str(path / "merges.txt"))
  for text, (input_ids, tokens), mine in zip(TEXTS, rows, ours):
    assert input_ids == tokenizer(text)["input_ids"]  # <s> … </s>
    assert tokens == mine
  state = safetensors.numpy.load_file(str(exported / "model.safetensors"))
  assert "concat_head.weight" in state


def _one_alias(path, alias, target):
  shutil.copytree(path, target)
  state = safetensors.numpy.load_file(str(target / hf_weights.SAFETENSORS))
  shared = state["model.shared.weight"]
  for key in ("model.shared.weight", *importing.param_map.TIED_ALIASES):
    state.pop(key, None)
  state[alias] = shared
  safetensors.numpy.save_file(state, str(target / hf_weights.SAFETENSORS),
                              metadata={"format": "pt"})
  return target


@pytest.mark.parametrize("alias", ["model.shared.weight", "lm_head.weight",
                                   "model.encoder.embed_tokens.weight",
                                   "model.decoder.embed_tokens.weight"])
def test_tied_embedding_under_any_one_alias(released, alias, tmp_path):
  path, _, config = released
  _, reference = importing.read_hf_directory(str(path))
  imported_config, params = importing.read_hf_directory(
      str(_one_alias(path, alias, tmp_path / "one")))
  assert imported_config == config
  np.testing.assert_array_equal(params["shared"]["embedding"],
                                reference["shared"]["embedding"])


def test_soft_exit_choice(released, tmp_path, caplog):
  path, _, _ = released
  target = tmp_path / "with_head"
  shutil.copytree(path, target)
  state = safetensors.numpy.load_file(str(target / hf_weights.SAFETENSORS))
  state["concat_head.weight"] = np.ones((32, 64), np.float32)
  safetensors.numpy.save_file(state, str(target / hf_weights.SAFETENSORS),
                              metadata={"format": "pt"})
  auto, params = importing.read_hf_directory(str(target))
  assert auto.soft_exit and "concat_head" in params
  with caplog.at_level("INFO"):
    dropped, params = importing.read_hf_directory(str(target),
                                                  soft_exit="false")
  assert not dropped.soft_exit and "concat_head" not in params
  assert "dropping concat_head.weight" in caplog.text
  with pytest.raises(ValueError, match="soft_exit=true but .* no "
                                       "'concat_head.weight'"):
    importing.read_hf_directory(str(path), soft_exit="true")


def test_special_ids_without_tokenizer_files(released, tmp_path):
  path, _, config = released
  target = tmp_path / "bare"
  shutil.copytree(path, target)
  for name in ("vocab.json", "merges.txt"):
    os.remove(target / name)
  with pytest.raises(ValueError, match="mask_token_id"):
    importing.read_hf_directory(str(target))
  imported, _ = importing.read_hf_directory(
      str(target), special_ids={"mask_token_id": config.mask_id,
                                "unk_token_id": 3})
  assert imported == config
  assert importing.find_vocabulary(str(target)) is None


@pytest.mark.parametrize("field", ["normalize_before", "scale_embedding"])
def test_a_config_that_is_not_bart_shaped_is_named(released, field, tmp_path):
  path, _, _ = released
  target = tmp_path / "prenorm"
  shutil.copytree(path, target)
  fields = json.loads((target / "config.json").read_text())
  fields[field] = True
  (target / "config.json").write_text(json.dumps(fields))
  with pytest.raises(ValueError, match=f"{field}=True; ELMER \\(BART\\) "
                                       "needs False"):
    importing.read_hf_directory(str(target))


def test_tokenizer_size_must_match_config(released, tmp_path):
  path, _, config = released
  target = tmp_path / "bigger"
  shutil.copytree(path, target)
  vocab = json.loads((target / "vocab.json").read_text())
  vocab["extra"] = len(vocab)
  (target / "vocab.json").write_text(json.dumps(vocab))
  with pytest.raises(ValueError, match=f"{config.vocab_size + 1} tokens.*"
                                       f"vocab_size={config.vocab_size}"):
    importing.read_hf_directory(str(target))
