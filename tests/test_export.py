"""Exported Hugging Face directories run as ELMER in PyTorch: the same
logits at every exit layer and the same NAR generation as the JAX model."""

import json

import jax
import numpy as np
import pytest
import seqio
import torch
import transformers

from elmer_jax import decoding, gin_utils
from elmer_jax.decoding import DecodeConfig
from elmer_jax.export import exporting
from elmer_jax.model.params import init_params
from tasks import pretraining
from tests import hf_reference
from tests.helpers import (LOAD_AND_GENERATE, SAMPLE, SOFT, TEXTS, TINY,
                           compiled_apply, random_tokens, run_python,
                           variants)


def _batch(config, seed, batch=3, enc_len=11, dec_len=9):
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, config, batch, enc_len)
  enc[-1, enc_len - 4:] = config.pad_id
  dec = np.full((batch, dec_len), config.mask_id, np.int32)
  dec[:, 0] = config.bos_id
  dec[1, dec_len - 3:] = config.pad_id
  return rng, enc, dec


def _torch(x):
  return torch.tensor(np.asarray(x), dtype=torch.long)


def check_logits(config, params, model, seed, atol=1e-4):
  """Exit and per-layer logits agree for random exit assignments."""
  rng, enc, dec = _batch(config, seed)
  apply = compiled_apply(config)
  assignments = [rng.integers(0, config.decoder_layers, dec.shape)
                 for _ in range(3)]
  assignments.append(np.zeros(dec.shape))  # Everything leaves at layer 0.
  for index, exits in enumerate(assignments):
    if index == 3:  # No padding anywhere (HF then skips building masks).
      enc, dec = enc[:1], dec[:1]
      exits = exits[:1]
    exits = exits.astype(np.int32)
    ours = apply({"params": params}, enc, dec, exits, return_all_layers=True)
    with torch.no_grad():
      theirs = model(_torch(enc), _torch(dec), _torch(exits),
                     output_layer_logits=True)
    np.testing.assert_allclose(theirs.logits.numpy(), np.asarray(ours.logits),
                               atol=atol, rtol=0)
    np.testing.assert_allclose(theirs.layer_logits.numpy(),
                               np.asarray(ours.layer_logits), atol=atol,
                               rtol=0)
    np.testing.assert_array_equal(theirs.exit_layers.numpy(), exits)


@pytest.mark.parametrize("soft_exit,scan",
                         variants((False, False), (True, True)))
def test_logits_at_every_exit_layer_match(soft_exit, scan, tmp_path):
  config = (SOFT if soft_exit else TINY).replace(scan_layers=scan)
  params = hf_reference.random_params(config, seed=3)
  model = hf_reference.export_and_load(config, params, tmp_path / "hf")
  assert type(model).__name__ == "ElmerForConditionalGeneration"
  assert (model.concat_head is not None) == soft_exit
  check_logits(config, params, model, seed=4)


@pytest.mark.slow
@pytest.mark.parametrize("soft_exit", [False, True])
def test_base_sized_logits_match(soft_exit, tmp_path):
  gin_utils.parse(["models/base.gin"])
  config = gin_utils.macro("MODEL_CONFIG").replace(soft_exit=soft_exit)
  params = hf_reference.random_params(config, seed=5)
  model = hf_reference.export_and_load(config, params, tmp_path / "hf")
  check_logits(config, params, model, seed=6)


@pytest.fixture(scope="module", params=variants(False, True),
                ids=["lplm", "soft"])
def exported(request, tmp_path_factory):
  config = SOFT if request.param else TINY
  params = hf_reference.random_params(config, seed=7)
  model = hf_reference.export_and_load(config, params,
                          tmp_path_factory.mktemp("hf") / "out")
  return config, params, model


def _jax_and_torch_generate(config, params, model, enc, decode_config,
                            target_lengths=None):
  ours = decoding.decode(config, params, enc, decode_config, target_lengths)
  theirs = model.generate(
      _torch(enc), max_length=decode_config.max_length,
      length_mode=decode_config.length_mode,
      target_lengths=(None if target_lengths is None else
                      torch.as_tensor(target_lengths)),
      exit_threshold=decode_config.exit_threshold,
      collapse_repeats=decode_config.collapse_repeats,
      return_dict_in_generate=True)
  return ours, theirs


def test_generate_matches_jax_decoder(exported):
  """Tokens, lengths and exit layers are identical for several thresholds,
  which between them make tokens leave at early, middle and last layers."""
  config, params, model = exported
  _, enc, _ = _batch(config, seed=8, batch=6)
  seen = set()
  for threshold in (0.0, 3.0, 4.0):
    ours, theirs = _jax_and_torch_generate(
        config, params, model, enc,
        DecodeConfig(max_length=12, exit_threshold=threshold))
    np.testing.assert_array_equal(theirs.sequences.numpy(), ours.tokens)
    np.testing.assert_array_equal(theirs.lengths.numpy(), ours.lengths)
    np.testing.assert_array_equal(theirs.exit_layers.numpy(),
                                  ours.exit_layers)
    seen |= set(np.unique(ours.exit_layers[ours.exit_layers >= 0]).tolist())
  assert {0, config.decoder_layers - 1} <= seen


@pytest.mark.integration  # Its own decoding program; the default: above.
def test_generate_oracle_lengths_and_collapse_match(exported):
  config, params, model = exported
  _, enc, _ = _batch(config, seed=9, batch=4)
  decode_config = DecodeConfig(length_mode="oracle", max_length=10,
                               exit_threshold=3.0, collapse_repeats=True)
  ours, theirs = _jax_and_torch_generate(config, params, model, enc,
                                         decode_config,
                                         np.array([3, 10, 6, 1], np.int32))
  np.testing.assert_array_equal(theirs.sequences.numpy(), ours.tokens)
  np.testing.assert_array_equal(theirs.lengths.numpy(), ours.lengths)
  np.testing.assert_array_equal(theirs.exit_layers.numpy(), ours.exit_layers)


def test_generate_is_called_and_returns_like_transformers(exported):
  """Without return_dict_in_generate: the LongTensor of sequences, the same
  as the dict's; max_new_tokens names the slots as max_length does; the
  attention mask of a padded batch is honoured."""
  config, _, model = exported
  _, enc, _ = _batch(config, seed=13, batch=3)
  inputs = {"input_ids": _torch(enc),
            "attention_mask": _torch(enc != config.pad_id)}
  ids = model.generate(**inputs, max_length=9)
  assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long
  full = model.generate(**inputs, max_new_tokens=9, num_beams=1,
                        do_sample=False, return_dict_in_generate=True)
  torch.testing.assert_close(ids, full.sequences, rtol=0, atol=0)
  assert full.exit_layers.shape == ids.shape == (3, 9)
  assert torch.equal(model.generate(inputs=inputs["input_ids"],
                                    max_length=9), ids)


def test_generate_refuses_what_one_pass_cannot_do(exported):
  _, _, model = exported
  enc = torch.ones((1, 4), dtype=torch.long) * 7
  with pytest.raises(ValueError, match="num_beams > 1: ELMER decodes non-"
                     "autoregressively in one pass.*no beam search"):
    model.generate(enc, num_beams=4)
  with pytest.raises(ValueError, match="do_sample=True: .*one pass"):
    model.generate(enc, do_sample=True)
  with pytest.raises(ValueError, match="num_return_sequences"):
    model.generate(enc, num_return_sequences=2)
  with pytest.raises(TypeError, match=r"does not take \['temperature'\]"):
    model.generate(enc, temperature=0.7)
  with pytest.raises(ValueError, match="max_length=8 and max_new_tokens=6"):
    model.generate(enc, max_length=8, max_new_tokens=6)
  with pytest.raises(ValueError, match="max_length=1; the decoder holds 2"):
    model.generate(enc, max_length=1)


def test_generate_refuses_bad_arguments(exported):
  _, _, model = exported
  enc = torch.ones((1, 4), dtype=torch.long) * 7
  with pytest.raises(ValueError, match="exit_threshold"):
    model.generate(enc, exit_threshold=100.0)
  with pytest.raises(ValueError, match="needs target_lengths"):
    model.generate(enc, length_mode="oracle")
  with pytest.raises(ValueError, match="exit_layers must lie"):
    model(enc, enc, exit_layers=torch.full((1, 4), 9))


def test_plain_bart_loads_every_weight(tmp_path):
  """A pretrained (non-soft-exit) export loads as BART with no missing or
  unexpected keys and the same tensors; BART's decoder is causal, so its
  logits differ from ELMER's."""
  params = hf_reference.random_params(TINY, seed=10)
  path = tmp_path / "hf"
  model = hf_reference.export_and_load(TINY, params, path)
  bart, info = transformers.BartForConditionalGeneration.from_pretrained(
      str(path), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert not info["mismatched_keys"]
  ours = model.state_dict()
  for key, value in bart.state_dict().items():
    torch.testing.assert_close(value, ours[key], rtol=0, atol=0)
  _, enc, dec = _batch(TINY, seed=11)
  with torch.no_grad():
    causal = bart.eval()(input_ids=_torch(enc),
                         attention_mask=_torch(enc != TINY.pad_id),
                         decoder_input_ids=_torch(dec)).logits
    elmer = model(_torch(enc), _torch(dec)).logits
  assert np.abs(causal[0, 0].numpy() - elmer[0, 0].numpy()).max() > 1e-3


def test_soft_exit_export_has_only_concat_head_extra_for_bart(tmp_path):
  params = hf_reference.random_params(SOFT, seed=12)
  exporting.write_hf_directory(SOFT, params, str(tmp_path / "hf"))
  _, info = transformers.BartForConditionalGeneration.from_pretrained(
      str(tmp_path / "hf"), output_loading_info=True)
  assert info["unexpected_keys"] == {"concat_head.weight"}
  assert not info["missing_keys"]


@pytest.mark.integration
def test_loads_offline_in_a_fresh_process(tmp_path):
  """Model and tokenizer load with HF_HUB_OFFLINE=1 and no elmer_jax, and
  generate what the JAX decoder generates for the same texts."""
  config = SAMPLE.replace(encoder_layers=1, decoder_layers=3, d_ff=64,
                          max_positions=32, soft_exit=True)
  params = jax.tree.map(lambda x: x + 0.3 * np.random.default_rng(0)
                        .standard_normal(x.shape, np.float32),
                        init_params(config, jax.random.key(0)))
  vocabulary = seqio.SentencePieceVocabulary(pretraining.SAMPLE_SPM)
  exporting.write_hf_directory(config, params, str(tmp_path / "hf"),
                               vocabulary=vocabulary,
                               decoding=dict(exit_threshold=2.0))
  result = run_python("-c", LOAD_AND_GENERATE, str(tmp_path / "hf"),
                      json.dumps(TEXTS), HF_HUB_OFFLINE="1",
                      PYTHONPATH=str(tmp_path))
  assert result.returncode == 0, result.stderr
  assert "trust_remote_code" not in result.stdout + result.stderr
  name, tokens, exits = json.loads(result.stdout.splitlines()[-1])
  assert name == "ElmerForConditionalGeneration"
  ours = decoding.generate_text(
      config, params, vocabulary, TEXTS,
      DecodeConfig(max_length=12, exit_threshold=2.0), max_input_length=32,
      batch_size=2)
  for row, token_row, exit_row in zip(ours, tokens, exits):
    assert token_row[:len(row["tokens"])] == row["tokens"]
    assert exit_row[:len(row["tokens"])] == row["exit_layers"]
