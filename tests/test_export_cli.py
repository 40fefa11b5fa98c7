"""The command-line path: export a run, load it in a fresh offline Python
process as ELMER (same generation as JAX), import it back bitwise."""

import json
import os

import gin
import jax
import numpy as np
import pytest

import tasks  # Registers the tasks.
from elmer_jax import decoding, gin_utils, trained_model
from elmer_jax.training import checkpoints
from tests.helpers import (LOAD_AND_GENERATE, TEXTS, assert_bitwise_equal,
                           run_python, sample_run)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  run = tmp_path_factory.mktemp("run")
  return (run, *sample_run(str(run)))


@pytest.mark.slow
def test_export_load_offline_generate_and_import(run_dir, tmp_path):
  run, config, params = run_dir
  out = tmp_path / "hf"
  result = run_python("-m", "elmer_jax.export", f"--model_dir={run}",
                f"--output_dir={out}", "--exit_threshold=2.0")
  assert result.returncode == 0, result.stderr
  assert {"model.safetensors", "config.json", "modeling_elmer.py",
          "configuration_elmer.py", "tokenizer.json"} <= set(os.listdir(out))

  result = run_python("-c", LOAD_AND_GENERATE, str(out), json.dumps(TEXTS),
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  assert "trust_remote_code" not in result.stdout + result.stderr
  assert result.returncode == 0, result.stderr
  name, tokens, exits = json.loads(result.stdout.splitlines()[-1])
  assert name == "ElmerForConditionalGeneration"
  ours = decoding.generate_text(
      config, params, tasks.pretraining.default_vocabulary(), TEXTS,
      decoding.DecodeConfig(max_length=12, exit_threshold=2.0),
      max_input_length=32, batch_size=2)
  for row, token_row, exit_row in zip(ours, tokens, exits):
    assert token_row[:len(row["tokens"])] == row["tokens"]
    assert exit_row[:len(row["tokens"])] == row["exit_layers"]

  result = run_python("-m", "elmer_jax.import_hf", f"--hf_dir={out}",
                f"--output_dir={tmp_path / 'ckpt'}")
  assert result.returncode == 0, result.stderr
  template = jax.tree.map(jax.numpy.zeros_like, params)
  restored = checkpoints.restore_params(str(tmp_path / "ckpt"), template)
  assert_bitwise_equal(restored, jax.tree.map(np.asarray, params))


def test_export_without_checkpoints_is_refused(tmp_path):
  """What `python -m elmer_jax.export` does before writing anything."""
  gin_utils.parse(["experiments/demo_sample_tiny.gin"])
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.gin").write_text(gin.config_str())
  trained_model.parse_run_config(str(empty))
  with pytest.raises(FileNotFoundError, match="has no checkpoints/ directory"):
    trained_model.load(str(empty), use_vocabulary=tasks.use_vocabulary)
  with pytest.raises(FileNotFoundError, match="config.gin is missing"):
    trained_model.parse_run_config(str(tmp_path))


def test_a_run_on_a_task_not_registered_here_is_named(tmp_path):
  """A run trained on a task that only its own script registered: generate,
  evaluate and export say what to do instead of seqio's lookup error."""
  gin_utils.parse(["experiments/finetune_sample_tiny.gin"],
                  ["MIXTURE_OR_TASK_NAME = 'my_pairs_elmer'"])
  (tmp_path / "config.gin").write_text(gin.config_str())
  trained_model.parse_run_config(str(tmp_path))
  with pytest.raises(ValueError, match=r"trained on 'my_pairs_elmer', which "
                     r"is not registered here.*--gin.VOCABULARY"):
    trained_model.load(str(tmp_path), use_vocabulary=tasks.use_vocabulary)
