"""Every shipped gin file parses, and its configs build."""

import glob
import os
import re

import gin
import pytest
import seqio

from elmer_jax import gin_utils
from elmer_jax.model.config import ElmerConfig
from elmer_jax.training.loop import TrainConfig

GIN_FILES = sorted(
    os.path.relpath(p, gin_utils.GIN_CONFIGS_DIR)
    for p in glob.glob(os.path.join(gin_utils.GIN_CONFIGS_DIR, "**", "*.gin"),
                       recursive=True))
# Files that bind a run but no model: parsed with the tiny model before them.
NEEDS_MODEL = ("runs/",)


def test_the_list_covers_every_kind_of_file():
  for expected in ("models/base.gin", "runs/pretrain.gin",
                   "experiments/pretrain_c4_wiki_base.gin",
                   "experiments/demo_sample_tiny.gin"):
    assert expected in GIN_FILES


def _macros(path: str) -> list[str]:
  """Macros the file itself defines (`NAME = ...` at the top level)."""
  with open(os.path.join(gin_utils.GIN_CONFIGS_DIR, path)) as f:
    return re.findall(r"^([A-Z][A-Z0-9_]*) = ", f.read(), flags=re.M)


def _bound(name: str) -> bool:
  try:
    gin.query_parameter(f"%{name}")
    return True
  except ValueError:
    return False


def _user_data_bindings(name: str, bpe_dir, tmp_path) -> list[str]:
  """Bindings for the files a user must point at their own data."""
  if "c4_wiki" in name:
    return [f"BART_VOCAB_DIR = '{bpe_dir}'"]
  if name == "data/pairs_files.gin":
    for split in ("train", "dev"):
      (tmp_path / f"{split}.src").write_text("a question\n")
      (tmp_path / f"{split}.tgt").write_text("an answer\n")
    return [f"TRAIN_FILES = ['{tmp_path}/train.src']",
            f"VALIDATION_FILES = ['{tmp_path}/dev.src']"]
  return []


@pytest.mark.parametrize("name", GIN_FILES)
def test_gin_file_parses_and_builds(name, bpe_dir, tmp_path):
  """Parses the file and evaluates its macros: every configurable it binds
  is built, so a misspelled parameter or a bad value fails here."""
  files = (["models/tiny.gin"] if name.startswith(NEEDS_MODEL) else []) + [
      name]
  gin_utils.parse(files, _user_data_bindings(name, bpe_dir, tmp_path))
  built = {m: gin_utils.macro(m) for m in
           {"MODEL_CONFIG", "TRAIN_CONFIG", *_macros(name)} if _bound(m)}
  assert built, f"{name} defines nothing to build"
  if "MODEL_CONFIG" in built:
    assert isinstance(built["MODEL_CONFIG"], ElmerConfig)
  if "TRAIN_CONFIG" in built:
    assert isinstance(built["TRAIN_CONFIG"], TrainConfig)
    seqio.get_mixture_or_task(built["TRAIN_CONFIG"].mixture_or_task)


def test_base_recipe_is_the_papers(bpe_dir):
  gin_utils.parse(["experiments/pretrain_c4_wiki_base.gin"],
                  [f"BART_VOCAB_DIR = '{bpe_dir}'"])
  model, train = gin_utils.macro("MODEL_CONFIG"), gin_utils.macro(
      "TRAIN_CONFIG")
  assert (model.d_model, model.decoder_layers, model.vocab_size) == (
      768, 6, 50265)
  assert train.batch_size == 4096 and train.objective.microbatches > 1
  assert (train.encoder_length, train.decoder_length) == (512, 512)
  assert train.mixture_or_task == "c4_wiki_elmer_bart"
  assert seqio.get_mixture_or_task("c4_en_elmer_bart").output_features[
      "targets"].vocabulary.vocab_size == 601


def test_missing_bart_vocabulary_is_named():
  gin_utils.parse(["experiments/pretrain_c4_wiki_base.gin"],
                  ["BART_VOCAB_DIR = '/nonexistent'"])
  with pytest.raises(FileNotFoundError, match="nonexistent/vocab.json"):
    gin_utils.macro("TRAIN_CONFIG")


def test_a_misspelled_binding_in_a_file_names_the_file(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'models/tiny.gin'\n"
                 "config.ElmerConfig.d_modle = 3\n")
  with pytest.raises(ValueError, match=r"d_modle[\s\S]*bad\.gin"):
    gin_utils.parse([str(bad)])
