"""Hugging Face directories → our parameters and orbax init checkpoints:
bitwise round trips both ways, and clear errors on bad directories."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch

from elmer_jax.export import exporting, hf_weights, importing
from elmer_jax.training import checkpoints
from tests import hf_reference
from tests.helpers import SOFT, TINY, assert_bitwise_equal


@pytest.mark.parametrize("config", [TINY, SOFT.replace(scan_layers=True)],
                         ids=["lplm", "soft_scanned"])
def test_import_of_export_is_bitwise_identical(config, tmp_path):
  params = hf_reference.random_params(config, seed=20)
  exporting.write_hf_directory(config, params, str(tmp_path / "hf"))
  imported_config, imported = importing.read_hf_directory(
      str(tmp_path / "hf"), scan_layers=config.scan_layers)
  assert imported_config == config
  assert_bitwise_equal(imported, params)
  # Through an orbax checkpoint, read as the trainer's init checkpoint reads.
  importing.save_params(imported, str(tmp_path / "ckpt"))
  template = jax.tree.map(jnp.zeros_like, params)
  restored = checkpoints.restore_params(str(tmp_path / "ckpt"), template)
  assert_bitwise_equal(restored, params)


def hf_directory(path, config, seed, soft_exit=False, weights="safetensors"):
  """A directory as transformers writes BART (model_type 'bart', no ELMER
  fields), BART-style vocab.json naming <mask> and <unk>, and optionally
  the released fine-tuned model's `concat_head.weight`."""
  if soft_exit:
    hf, concat_head, _ = hf_reference.random_soft_exit_model(config, seed)
  else:
    hf, concat_head = hf_reference.random_bart(config, seed), None
  hf.save_pretrained(str(path))
  state = {k: v.contiguous() for k, v in hf.state_dict().items()}
  if concat_head is not None:
    state["concat_head.weight"] = concat_head.weight.detach().clone()
  os.remove(path / hf_weights.SAFETENSORS)
  if weights == "safetensors":
    safetensors.torch.save_file(
        {k: v.clone() for k, v in state.items()
         if k not in ("lm_head.weight", "model.encoder.embed_tokens.weight",
                      "model.decoder.embed_tokens.weight")},
        str(path / hf_weights.SAFETENSORS), metadata={"format": "pt"})
  else:
    torch.save(state, path / hf_weights.PYTORCH_BIN)
  vocab = {f"tok{i}": i for i in range(config.vocab_size)}
  vocab = {k: v for k, v in vocab.items()
           if v not in (config.mask_id, config.unk_id)}
  vocab.update({"<mask>": config.mask_id, "<unk>": config.unk_id})
  (path / "vocab.json").write_text(json.dumps(vocab))
  return path


@pytest.mark.parametrize("soft_exit", [False, True])
def test_export_of_import_is_bitwise_identical(soft_exit, tmp_path):
  config = SOFT if soft_exit else TINY
  source = hf_directory(tmp_path / "released", config, 21, soft_exit)
  imported_config, params = importing.read_hf_directory(str(source))
  # The reference BART turns dropout off.
  assert imported_config == config.replace(
      dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.0)
  exporting.write_hf_directory(imported_config, params, str(tmp_path / "out"))
  original = safetensors.numpy.load_file(str(source / "model.safetensors"))
  exported = safetensors.numpy.load_file(
      str(tmp_path / "out" / "model.safetensors"))
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    assert exported[key].dtype == value.dtype
    assert exported[key].tobytes() == value.tobytes(), key
  fields = json.loads((tmp_path / "out" / "config.json").read_text())
  bart = json.loads((source / "config.json").read_text())
  for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers",
               "encoder_ffn_dim", "decoder_attention_heads",
               "max_position_embeddings", "pad_token_id", "eos_token_id"):
    assert fields[name] == bart[name], name
  assert fields["soft_exit"] == soft_exit


def test_pytorch_bin_is_read_weights_only(tmp_path):
  source = hf_directory(tmp_path / "bin", TINY, 22, weights="bin")
  _, from_bin = importing.read_hf_directory(str(source))
  expected = hf_reference.random_params(TINY, seed=22)
  assert_bitwise_equal(from_bin, expected)
  # A pickle that would run code is refused.
  torch.save({"model.shared.weight": torch.zeros(2), "evil": os.getcwd},
             source / hf_weights.PYTORCH_BIN)
  with pytest.raises(ValueError, match="weights-only"):
    importing.read_hf_directory(str(source))


def _rewrite(path, change):
  file = path / "model.safetensors"
  state = safetensors.numpy.load_file(str(file))
  change(state)
  safetensors.numpy.save_file(state, str(file), metadata={"format": "pt"})


def test_bad_directories_are_named(tmp_path):
  source = hf_directory(tmp_path / "hf", TINY, 23)
  key = "model.decoder.layers.1.self_attn.q_proj.weight"
  _rewrite(source, lambda s: s.update({key: np.zeros((32, 30), np.float32)}))
  with pytest.raises(ValueError, match=rf"{key}.*\(32, 30\).*\(32, 32\)"):
    importing.read_hf_directory(str(source))
  _rewrite(source, lambda s: s.pop(key))
  with pytest.raises(ValueError, match=rf"lacks '{key}'"):
    importing.read_hf_directory(str(source))

  source = hf_directory(tmp_path / "vocab", TINY, 23)
  vocab = json.loads((source / "vocab.json").read_text())
  vocab["extra"] = len(vocab)
  (source / "vocab.json").write_text(json.dumps(vocab))
  with pytest.raises(ValueError, match="97 tokens.*vocab_size=96"):
    importing.read_hf_directory(str(source))

  source = hf_directory(tmp_path / "half", TINY, 23)
  file = source / "model.safetensors"
  file.write_bytes(file.read_bytes()[:1000])
  with pytest.raises(ValueError, match="model.safetensors.*half written"):
    importing.read_hf_directory(str(source))

  os.remove(file)
  with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
    importing.read_hf_directory(str(source))
  with pytest.raises(FileNotFoundError, match="config.json is missing"):
    importing.read_hf_directory(str(tmp_path / "nowhere"))


def test_export_names_a_missing_parameter(tmp_path):
  params = hf_reference.random_params(TINY, seed=24)
  del params["decoder"]["layers_2"]["ffn"]["fc1"]["kernel"]
  with pytest.raises(ValueError, match="decoder/layers_2/ffn/fc1/kernel"):
    exporting.write_hf_directory(TINY, params, str(tmp_path / "hf"))
  assert not os.path.exists(tmp_path / "hf")
  with pytest.raises(FileExistsError, match="overwrite"):
    exporting.write_hf_directory(TINY, params, str(tmp_path))
