"""The inference decoder (model/exit_decoder.py) against the masked training
decoder kept as the reference: the same tokens and exit layers at every
threshold, plain and soft exit, per-layer and scanned weights, padded slots;
it stops after the last exit and computes running tokens only. The one-pass
exit test against NumPy; the exported PyTorch `generate` stops early with the
same outputs; the exit-cost warning."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from elmer_jax import decoding
from elmer_jax.decoding import DecodeConfig
from elmer_jax.model import exit_decoder, off_ramp
from elmer_jax.model.attention import MultiHeadAttention
from tests import hf_reference
from tests.helpers import SOFT, TINY, compiled_apply, random_tokens, variants

LAYERS = TINY.decoder_layers


def _inputs(config, seed, batch=6, enc_len=12, dec_len=16):
  """Encoder rows (one padded) and decoder slots of several oracle lengths."""
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, config, batch, enc_len)
  enc[-1, 7:] = config.pad_id
  lengths = np.array([dec_len, 3, 9, dec_len, 1, 12][:batch], np.int32)
  dec = np.asarray(decoding.decoder_inputs(config, batch, dec_len,
                                           jnp.asarray(lengths)))
  return enc, dec


def _all_layers(config, params, enc, dec):
  return compiled_apply(config)({"params": params}, enc, dec,
                                return_all_layers=True)


def _thresholds(config, params, enc, dec):
  """0, log V, and thresholds between the quantiles of the running tokens'
  entropies at every layer, none within 1e-4 of an entropy (so float
  differences cannot move a token across)."""
  full = _all_layers(config, params, enc, dec)
  values = np.sort(hf_reference.entropy(np.asarray(full.layer_logits)).ravel())
  chosen = [0.0, float(np.log(config.vocab_size))]
  for q in np.linspace(0.05, 0.95, 10):
    i = int(q * (len(values) - 1))
    gap = i + int(np.argmax(np.diff(values[i:i + 20])))
    if values[gap + 1] - values[gap] > 2e-4:
      chosen.append(float(values[gap] + values[gap + 1]) / 2)
  return chosen


def _model(soft, scan, seed):
  config = (SOFT if soft else TINY).replace(scan_layers=scan)
  if soft:
    return config, hf_reference.random_soft_exit_model(config, seed)[2]
  return config, hf_reference.plain_model(seed=seed, config=config)[2]


@pytest.mark.parametrize("soft,scan", variants(
    (False, False), (True, False), (False, True), (True, True)))
def test_same_tokens_and_exit_layers_as_the_masked_decoder(soft, scan):
  config, params = _model(soft, scan, seed=31)
  enc, dec = _inputs(config, 32)
  real = dec != config.pad_id
  reference = compiled_apply(config)
  fast = jax.jit(exit_decoder.decode, static_argnums=(0,))
  spread, stopped, gathered = set(), False, False
  for threshold in _thresholds(config, params, enc, dec):
    # A traced threshold, 0 included (no token leaves early): one program.
    ref = reference({"params": params}, enc, dec,
                    exit_threshold=np.float32(threshold))
    ref_exits = np.asarray(ref.exit_layers)
    out = fast(config, params, enc, dec, jnp.float32(threshold))
    np.testing.assert_array_equal(
        np.asarray(out.tokens)[real],
        np.asarray(jnp.argmax(ref.logits, -1))[real], err_msg=str(threshold))
    np.testing.assert_array_equal(np.asarray(out.exit_layers)[real],
                                  ref_exits[real], err_msg=str(threshold))
    # Layers run: up to the last exit of a real slot, and no further.
    assert int(out.layers_run) == ref_exits[real].max() + 1
    assert int(out.slot_passes) <= int(out.layers_run) * dec.size
    spread |= set(np.unique(ref_exits[real]).tolist())
    stopped |= int(out.layers_run) < LAYERS
    gathered |= int(out.slot_passes) < int(out.layers_run) * dec.size
  assert spread == set(range(LAYERS)) and stopped and gathered


def test_stops_after_the_last_exit_and_computes_running_tokens_only():
  config, params = _model(False, False, seed=33)
  enc, dec = _inputs(config, 34)
  fast = jax.jit(exit_decoder.decode, static_argnums=(0,))
  everything = fast(config, params, enc, dec,
                    jnp.float32(np.log(config.vocab_size)))
  assert int(everything.layers_run) == 1
  real = dec != config.pad_id  # Padding slots keep the last layer.
  assert np.all(np.asarray(everything.exit_layers)[real] == 0)
  none = jax.jit(exit_decoder.decode, static_argnums=(0, 4))(
      config, params, enc, dec, 0.0)
  assert int(none.layers_run) == LAYERS
  assert int(none.slot_passes) == LAYERS * dec.size
  # A threshold under which most tokens leave at layer 0: later layers run
  # at a smaller capacity than all slots.
  full = _all_layers(config, params, enc, dec)
  first = hf_reference.entropy(np.asarray(full.layer_logits[0]))
  threshold = float(np.quantile(first, 0.9))
  some = fast(config, params, enc, dec, jnp.float32(threshold))
  assert int(some.slot_passes) < int(some.layers_run) * dec.size
  # Only padding slots never leave: an all-padding decoder row costs nothing.
  # Capacities follow the batch's running tokens, not its fullest row: with
  # one real row of 16 slots out of 96, a layer runs 24 slots (per row: 96).
  dec_padded = dec.copy()
  dec_padded[1:] = config.pad_id
  padded = fast(config, params, enc, dec_padded, jnp.float32(threshold))
  assert int(padded.layers_run) == np.asarray(some.exit_layers)[0].max() + 1
  assert exit_decoder.capacities(dec.size) == [96, 48, 24, 12]
  assert int(padded.slot_passes) <= int(padded.layers_run) * 24


@pytest.mark.parametrize("block", [None, 3])
def test_gathered_queries_attend_to_their_own_rows(block, monkeypatch):
  """The gathered path's attention (queries from several rows, in blocks of
  `block`) against MultiHeadAttention over each row, the training path."""
  config = TINY
  rng = np.random.default_rng(38)
  kv = rng.normal(size=(3, 7, config.d_model)).astype(np.float32)
  key_mask = rng.random((3, 7)) > 0.3
  key_mask[:, 0] = True
  grid = rng.normal(size=(3, 5, config.d_model)).astype(np.float32)
  attention = MultiHeadAttention(config)
  variables = attention.init(jax.random.key(0), grid, kv,
                             key_mask[:, None, None, :])
  every = attention.apply(variables, grid, kv, key_mask[:, None, None, :])
  rows, positions = np.array([0, 0, 2, 1, 2]), np.array([1, 4, 0, 3, 2])
  if block:
    monkeypatch.setattr(exit_decoder, "GATHER_BLOCK",
                        block * kv.shape[1] * config.d_model)
  gathered = exit_decoder._GatheredAttention(config).apply(
      variables, grid[rows, positions], rows, kv, key_mask)
  np.testing.assert_allclose(gathered, np.asarray(every)[rows, positions],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,blocks", [("float32", None),
                                           ("bfloat16", None),
                                           ("float32", "rows"),
                                           ("float32", "chunks")])
def test_one_pass_exit_test_matches_numpy(dtype, blocks, monkeypatch):
  rng = np.random.default_rng(35)
  config = TINY.replace(dtype=dtype)
  if blocks == "rows":  # 15 rows in blocks of 4: the last block padded.
    monkeypatch.setattr(off_ramp, "EXIT_TEST_BLOCK", 4 * config.vocab_size)
  if blocks == "chunks":  # As for a table out of cache: blocks of 4 rows,
    # the vocabulary in chunks of 5 columns and a narrower last one, so the
    # tie below (2 and 9) spans two chunks.
    assert config.vocab_size % 5
    monkeypatch.setattr(off_ramp, "EXIT_TEST_CACHED_TABLE", 0)
    monkeypatch.setattr(off_ramp, "EXIT_TEST_WHOLE_VOCABULARY", 0)
    monkeypatch.setattr(off_ramp, "EXIT_TEST_MIN_COLUMNS", 5)
    monkeypatch.setattr(off_ramp, "EXIT_TEST_BLOCK", 20)
  bias = rng.normal(size=(config.vocab_size,)).astype(np.float32)
  bias[[9, 2]] = bias.max() + 1  # A tie: argmax takes the first, 2.
  weights = off_ramp.OffRampWeights(
      rng.normal(size=(config.vocab_size, config.d_model)).astype(np.float32),
      bias)
  states = rng.normal(size=(3, 5, config.d_model)).astype(np.float32)
  states[1, 2] = 0.0  # Its logits are the bias.
  entropy, argmax = off_ramp.entropy_and_argmax(config, weights, states)
  cast = (lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
          ) if dtype == "bfloat16" else (lambda x: x.astype(np.float64))
  logits = cast(states) @ cast(weights.embedding).T + weights.bias
  np.testing.assert_allclose(entropy, hf_reference.entropy(logits), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(argmax, logits.argmax(-1))
  assert argmax[1, 2] == 2
  _, argmax_only = off_ramp.entropy_and_argmax(config, weights, states,
                                               with_entropy=False)
  np.testing.assert_array_equal(argmax_only, argmax)


@pytest.mark.integration  # Exports, then decodes in PyTorch and in JAX.
def test_torch_generate_stops_early_with_the_same_outputs(tmp_path):
  config = TINY
  params = hf_reference.random_params(config, seed=36)
  model = hf_reference.export_and_load(config, params, tmp_path / "hf")
  enc, _ = _inputs(config, 37)
  calls = []
  for layer in model.model.decoder.layers:
    layer.register_forward_hook(lambda *_: calls.append(1))
  enc_t = torch.tensor(enc, dtype=torch.long)
  runs = []
  for threshold in (float(np.log(config.vocab_size)), 3.0, 4.0, 0.0):
    calls.clear()
    theirs = model.generate(enc_t, max_length=16, exit_threshold=threshold,
                            return_dict_in_generate=True)
    ran = len(calls)
    ours = decoding.decode(config, params, enc,
                           DecodeConfig(max_length=16,
                                        exit_threshold=threshold))
    np.testing.assert_array_equal(theirs.sequences.numpy(), ours.tokens)
    np.testing.assert_array_equal(theirs.exit_layers.numpy(),
                                  ours.exit_layers)
    assert ran == int(ours.layers_run)
    with torch.no_grad():  # Every layer, no stop: the same exits.
      dec = model.decoder_inputs(enc.shape[0], 16)
      full = model(enc_t, dec, exit_threshold=threshold)
    assert int(full.exit_layers.max()) + 1 == ran
    runs.append(ran)
  assert runs[0] == 1 and runs[-1] == LAYERS


def test_exit_cost_warning(caplog):
  wide_vocab = TINY.replace(vocab_size=4096)
  slots = np.ones((2, 8), bool)
  late = np.full((2, 8), LAYERS - 2)
  config = DecodeConfig(max_length=8, exit_threshold=1.0)
  with caplog.at_level(logging.WARNING):
    assert decoding.warn_if_exit_costs_more(wide_vocab, config, late, slots,
                                            16)
  assert "soft_exit=False" in caplog.text and "slower" in caplog.text
  caplog.clear()
  early = np.zeros((2, 8))  # Nobody pays for a test; everybody saves.
  assert not decoding.warn_if_exit_costs_more(wide_vocab, config, early,
                                              slots, 16)
  assert not decoding.warn_if_exit_costs_more(
      wide_vocab.replace(soft_exit=True), config, late, slots, 16)
  assert not decoding.warn_if_exit_costs_more(
      wide_vocab, DecodeConfig(max_length=8), late, slots, 16)
  cost, saved = decoding.exit_test_flops(wide_vocab, late, slots, 16)
  d, f = TINY.d_model, TINY.d_ff
  assert cost == 16 * (LAYERS - 2) * 2 * d * 4096
  assert saved == 16 * (8 * d * d + 4 * 24 * d + 4 * d * f)
  assert not caplog.text


def test_threshold_zero_is_off_in_one_place():
  """`off_ramp.exits_early` decides outside a program (None and any 0 are
  off; an array is on), `off_ramp.confident` inside (0 moves no token)."""
  for off in (None, 0, 0.0, np.float32(0)):
    assert not off_ramp.exits_early(off)
  for on in (0.5, np.float64(2.0), jnp.float32(0)):
    assert off_ramp.exits_early(on)
  entropies = jnp.array([0.0, 0.3, 1.0])
  assert not off_ramp.confident(entropies, jnp.float32(0)).any()
  np.testing.assert_array_equal(off_ramp.confident(entropies, 0.5),
                                [True, True, False])


def test_a_row_is_decided_once_every_slot_before_its_first_exited_eos_has():
  """The early-stop rule for callers that cut at the first `</s>`, against a
  loop over slots: a row is decided when an exited `</s>` comes before its
  first running real slot."""
  rng = np.random.default_rng(38)
  eos = TINY.eos_id
  tokens = rng.choice([eos, 5, 6], size=(200, 7), p=[0.3, 0.35, 0.35])
  done = rng.random((200, 7)) < 0.6
  real = rng.random((200, 7)) < 0.9
  done |= ~real
  expected = []
  for row_tokens, row_done, row_real in zip(tokens, done, real):
    decided = False
    for token, slot_done, slot_real in zip(row_tokens, row_done, row_real):
      if not slot_done:
        break
      if slot_real and token == eos:
        decided = True
        break
    expected.append(decided)
  got = exit_decoder.decided_rows(jnp.asarray(tokens), jnp.asarray(done),
                                  jnp.asarray(real), eos)
  np.testing.assert_array_equal(np.asarray(got), expected)
  assert 0 < sum(expected) < len(expected)
