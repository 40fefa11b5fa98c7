"""NAR decoding: last-layer argmax without early exit, early exit against a
PyTorch reference on HF's BART layers, length modes, cutting, collapsing,
bad thresholds and inputs."""

import logging

import numpy as np
import pytest
import seqio
import torch

from elmer_jax import decoding
from elmer_jax.decoding import DecodeConfig
from tests import hf_reference
from tests.helpers import SOFT, TINY, compiled_apply, random_tokens, variants

LAYERS = TINY.decoder_layers
EOS, PAD = TINY.eos_id, TINY.pad_id


def torch_early_exit(hf, concat_head, enc, dec, pad_id, threshold):
  """Hard early exit written on HF's layers: after layer l every running
  token whose off-ramp entropy is <= threshold (or every one at the last
  layer) keeps that state and token; later layers see the frozen state
  (through concat_head with its token, for a soft-exit model).

  Returns (tokens, exit layers, per-layer entropies of the running tokens,
  exit logits).
  """
  decoder = hf.model.decoder
  with torch.no_grad():
    encoded, hidden, self_mask, cross_mask = hf_reference.decoder_start(
        hf, enc, dec, pad_id)
    head = lambda h: hf.lm_head(h) + hf.final_logits_bias
    done = torch.zeros(dec.shape, dtype=torch.bool)
    frozen = torch.zeros_like(hidden)
    exits = torch.full(dec.shape, -1)
    entropies = []
    for index, layer in enumerate(decoder.layers):
      out = layer(hidden, attention_mask=self_mask,
                  encoder_hidden_states=encoded,
                  encoder_attention_mask=cross_mask, use_cache=False)
      out = out[0] if isinstance(out, tuple) else out
      state = torch.where(done[..., None], frozen, out)
      logits = head(state)
      entropy = torch.as_tensor(hf_reference.entropy(logits.numpy()))
      entropies.append(np.where(done.numpy(), np.nan, entropy.numpy()))
      leave = ~done & ((entropy <= threshold) | (index == LAYERS - 1))
      if threshold == 0:
        leave = ~done & (index == LAYERS - 1)
      exits = torch.where(leave, index, exits)
      frozen = torch.where(leave[..., None], state, frozen)
      done |= leave
      hidden = state
      if concat_head is not None:
        fed = decoder.embed_tokens(logits.argmax(-1))
        hidden = concat_head(torch.cat([state, fed], -1))
    logits = head(frozen)
  return (logits.argmax(-1).numpy(), exits.numpy(), np.stack(entropies),
          logits.numpy())


def _encoder_inputs(seed, batch=4, length=12):
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, TINY, batch, length)
  enc[-1, 7:] = PAD
  return enc


def _slots(length, batch=4):
  return np.array(decoding.decoder_inputs(TINY, batch, length))


def _python_finalize(tokens, exits, n_slots, collapse):
  """Per row: keep slots before the first </s> (or the end), merge repeats."""
  out_tokens, out_exits, lengths = [], [], []
  for row, row_exits, n in zip(tokens, exits, n_slots):
    kept, kept_exits, eos = [], [], None
    for t in range(n):
      if row[t] == EOS:
        eos = t
        break
      if collapse and t > 0 and row[t] == row[t - 1]:
        continue
      kept.append(row[t])
      kept_exits.append(row_exits[t])
    lengths.append(len(kept))
    if eos is not None:
      kept.append(EOS)
      kept_exits.append(row_exits[eos])
    pad = len(row) - len(kept)
    out_tokens.append(kept + [PAD] * pad)
    out_exits.append(kept_exits + [-1] * pad)
  return np.array(out_tokens), np.array(lengths), np.array(out_exits)


@pytest.mark.parametrize("collapse", [False, True])
def test_finalize_cuts_at_first_eos_and_merges_repeats(collapse):
  tokens = np.array([[5, 5, 6, EOS, 7, EOS],
                     [8, 8, 8, 9, 9, 8],
                     [EOS, 5, 5, 5, 5, 5],
                     [5, 6, 6, 7, EOS, EOS]], np.int32)
  exits = np.arange(24, dtype=np.int32).reshape(4, 6) % LAYERS
  n_slots = np.array([6, 6, 6, 4])  # Row 3: its </s> lies in padding.
  slots = np.arange(6)[None] < n_slots[:, None]
  out = decoding.finalize(tokens, exits, slots, EOS, PAD, collapse)
  expected = _python_finalize(tokens, exits, n_slots, collapse)
  np.testing.assert_array_equal(out.tokens, expected[0])
  np.testing.assert_array_equal(out.lengths, expected[1])
  np.testing.assert_array_equal(out.exit_layers, expected[2])
  # Written out by hand for two rows.
  if collapse:
    np.testing.assert_array_equal(out.tokens[1], [8, 9, 8, PAD, PAD, PAD])
  np.testing.assert_array_equal(out.tokens[0][:4 - collapse],
                                [5, 6, EOS] if collapse else [5, 5, 6, EOS])
  assert out.lengths[2] == 0 and out.tokens[2][0] == EOS


@pytest.mark.parametrize("soft", variants(False, True))
def test_threshold_zero_is_the_last_layer_argmax(soft):
  if soft:
    hf, concat_head, params = hf_reference.random_soft_exit_model(SOFT, seed=22)
  else:
    hf, concat_head, params = hf_reference.plain_model()
  config = SOFT if soft else TINY
  enc = _encoder_inputs(23)
  out = decoding.decode(config, params, enc, DecodeConfig(max_length=9))
  dec = _slots(9)
  tokens, exits, _, _ = torch_early_exit(hf, concat_head, enc, dec, PAD,
                                         0.0)
  if not soft:
    last = hf_reference.bidirectional_logits(hf, enc, dec, PAD).argmax(-1)
    np.testing.assert_array_equal(tokens, last)
  assert np.all(exits == LAYERS - 1)
  expected = _python_finalize(tokens, exits, [9] * 4, False)
  np.testing.assert_array_equal(out.tokens, expected[0])
  np.testing.assert_array_equal(out.lengths, expected[1])
  np.testing.assert_array_equal(out.exit_layers, expected[2])


def _widest_gap(values, low, high):
  """The middle of the widest gap between the `low` and `high` quantiles of
  the (non-NaN) `values`."""
  values = np.sort(values[~np.isnan(values)])
  gaps = np.diff(values)
  lo, hi = int(len(values) * low), int(len(values) * high)
  i = lo + int(np.argmax(gaps[lo:hi]))
  return float(values[i] + values[i + 1]) / 2


def _spreading_threshold(hf, concat_head, enc, dec):
  """A threshold under which the reference's tokens leave at three or more
  layers, with no running token's entropy within 1e-4 of it (so float
  differences cannot move a token across); with the reference's output."""
  _, _, entropies, _ = torch_early_exit(hf, concat_head, enc, dec, PAD, 0.0)
  for low in np.linspace(0.05, 0.8, 16):
    threshold = _widest_gap(entropies, low, low + 0.1)
    tokens, exits, seen, logits = torch_early_exit(hf, concat_head, enc,
                                                   dec, PAD, threshold)
    running = seen[~np.isnan(seen)]
    if (len(np.unique(exits)) >= 3
        and np.abs(running - threshold).min() > 1e-4):
      return threshold, tokens, exits, logits
  raise AssertionError("No threshold spreads the exit layers.")


@pytest.mark.parametrize("soft,scan", variants(
    (True, True), (False, False), (True, False), (False, True)))
def test_early_exit_matches_torch_reference(soft, scan):
  config = (SOFT if soft else TINY).replace(scan_layers=scan)
  if soft:
    hf, concat_head, params = hf_reference.random_soft_exit_model(config, seed=24)
  else:
    hf, concat_head, params = hf_reference.plain_model(seed=24, config=config)
  enc = _encoder_inputs(25)
  dec = _slots(12)
  threshold, tokens, exits, logits = _spreading_threshold(hf, concat_head,
                                                         enc, dec)
  model_out = compiled_apply(config)({"params": params}, enc, dec,
                                     exit_threshold=threshold)
  np.testing.assert_array_equal(model_out.exit_layers, exits)
  np.testing.assert_allclose(model_out.logits, logits, atol=1e-4, rtol=0)

  out = decoding.decode(config, params, enc,
                        DecodeConfig(max_length=12, exit_threshold=threshold))
  expected = _python_finalize(tokens, exits, [12] * 4, False)
  np.testing.assert_array_equal(out.tokens, expected[0])
  np.testing.assert_array_equal(out.lengths, expected[1])
  np.testing.assert_array_equal(out.exit_layers, expected[2])
  # Control: early exit changes some tokens.
  full, _, _, _ = torch_early_exit(hf, concat_head, enc, dec, PAD, 0.0)
  assert np.any(full != tokens)


@pytest.mark.integration  # Implied by the torch references above and in
# test_copy_on_exit (dynamic and fixed exits); three model programs.
def test_early_exit_state_is_what_later_layers_see():
  """Model-level check: the exit layers decoding reports, given back to the
  model as fixed exit layers, reproduce its logits (copy-on-exit)."""
  _, _, params = hf_reference.plain_model(seed=26)
  enc = _encoder_inputs(27)
  dec = _slots(10)
  model = compiled_apply(TINY)
  full = model({"params": params}, enc, dec, return_all_layers=True)
  entropy = hf_reference.entropy(np.asarray(full.layer_logits[0]))
  threshold = float(np.median(entropy))
  dynamic = model({"params": params}, enc, dec, exit_threshold=threshold)
  exits = np.asarray(dynamic.exit_layers)
  assert np.any(exits == 0) and np.any(exits > 0)
  np.testing.assert_array_equal(exits == 0, entropy <= threshold)
  given = model({"params": params}, enc, dec, exits)
  np.testing.assert_allclose(dynamic.logits, given.logits, atol=1e-5)


def test_oracle_mode_pads_each_example_to_its_length():
  hf, _, params = hf_reference.plain_model(seed=28)
  enc = _encoder_inputs(29)
  lengths = np.array([3, 10, 1, 6])
  config = DecodeConfig(length_mode="oracle", max_length=10)
  out = decoding.decode(TINY, params, enc, config, target_lengths=lengths)
  dec = np.array(decoding.decoder_inputs(TINY, 4, 10, lengths))
  np.testing.assert_array_equal((dec != PAD).sum(1), lengths)
  tokens, exits, _, _ = torch_early_exit(hf, None, enc, dec, PAD, 0.0)
  expected = _python_finalize(tokens, exits, lengths, False)
  np.testing.assert_array_equal(out.tokens, expected[0])
  np.testing.assert_array_equal(out.lengths, expected[1])
  assert np.all(np.asarray(out.lengths) <= lengths)
  # Control: the padding changes what the other slots see.
  padded = hf_reference.bidirectional_logits(hf, enc, dec, PAD)
  unpadded = hf_reference.bidirectional_logits(hf, enc, _slots(10), PAD)
  valid = dec != PAD
  assert np.abs(padded[valid] - unpadded[valid]).max() > 1e-3
  with pytest.raises(ValueError, match="needs target_lengths"):
    decoding.decode(TINY, params, enc, config)
  with pytest.raises(ValueError, match="takes no target_lengths"):
    decoding.decode(TINY, params, enc, DecodeConfig(max_length=10), lengths)
  with pytest.raises(ValueError, match=r"\[1, 11\].*max_length=10"):
    decoding.decode(TINY, params, enc, config, np.array([1, 11, 2, 2]))


@pytest.mark.integration  # Its own decoding program; the cut: test_finalize_*.
def test_decoding_cuts_at_a_predicted_eos():
  """With </s> boosted so that some slots but not the first of a row
  predict it, the output stops at the first, and the collapsed output merges
  repeats before it."""
  hf, _, params = hf_reference.plain_model(seed=30)
  enc = _encoder_inputs(31)
  dec = _slots(12)
  logits = hf_reference.bidirectional_logits(hf, enc, dec, PAD)
  margin = logits.max(-1) - logits[..., EOS]
  row = int(np.argmax((margin < margin[:, :1]).sum(1)))
  boost = (margin[row, 0] + margin[row][margin[row] < margin[row, 0]].max()) / 2
  assert np.abs(margin - boost).min() > 1e-4
  bias = np.array(params["final_logits_bias"])
  bias[EOS] += boost
  params = dict(params, final_logits_bias=bias)
  with torch.no_grad():
    hf.final_logits_bias[0, EOS] += boost
  tokens, exits, _, _ = torch_early_exit(hf, None, enc, dec, PAD, 0.0)
  assert np.any(tokens == EOS) and np.any((tokens == EOS).argmax(1) > 0)
  for collapse in (False, True):
    out = decoding.decode(TINY, params, enc,
                          DecodeConfig(max_length=12,
                                       collapse_repeats=collapse))
    expected = _python_finalize(tokens, exits, [12] * 4, collapse)
    np.testing.assert_array_equal(out.tokens, expected[0])
    np.testing.assert_array_equal(out.lengths, expected[1])


def test_bad_configs_are_named():
  with pytest.raises(ValueError,
                     match=r"exit_threshold=-0\.1 .*\[0, 4\.5643\]"):
    decoding.make_decode_fn(TINY, DecodeConfig(exit_threshold=-0.1))
  with pytest.raises(ValueError, match=r"exit_threshold=5\.0 .*vocab_size=96"):
    decoding.make_decode_fn(TINY, DecodeConfig(exit_threshold=5.0))
  decoding.make_decode_fn(TINY, DecodeConfig(exit_threshold=np.log(96),
                                             max_length=8))
  with pytest.raises(ValueError, match="length_mode='beam'"):
    DecodeConfig(length_mode="beam")
  with pytest.raises(ValueError, match="max_length=64 exceeds.*40"):
    decoding.make_decode_fn(TINY, DecodeConfig(max_length=64))
  with pytest.raises(ValueError, match="max_length must be >= 2"):
    DecodeConfig(max_length=1)
  with pytest.raises(ValueError, match="max_length is None.*decoder_length"):
    decoding.make_decode_fn(TINY, DecodeConfig())


class _CharVocabulary(seqio.Vocabulary):
  """Letters a..z as ids 10..35; ids 0..3 special as in TINY."""

  def __init__(self):
    super().__init__(extra_ids=0)

  @property
  def eos_id(self):
    return EOS

  @property
  def unk_id(self):
    return 3

  @property
  def _base_vocab_size(self):
    return TINY.vocab_size

  def _encode(self, s):
    return [10 + ord(c) - ord("a") for c in s if "a" <= c <= "z"]

  def _decode(self, ids):
    return "".join(chr(ord("a") + i - 10) if 10 <= i < 36 else "?"
                   for i in ids)

  def _encode_tf(self, s):
    raise NotImplementedError

  def _decode_tf(self, ids):
    raise NotImplementedError

  def __eq__(self, other):
    return isinstance(other, _CharVocabulary)


@pytest.mark.parametrize("encoder_bos", [True, False])
def test_generate_text(caplog, encoder_bos):
  _, _, params = hf_reference.plain_model(seed=32)
  vocab = _CharVocabulary()
  vocab.encoder_bos = encoder_bos  # Default: BART's <s> tokens </s>.
  config = DecodeConfig(max_length=8, collapse_repeats=True)
  texts = ["hello world", "x" * 30, "abc", "y" * 25]
  with caplog.at_level(logging.WARNING):
    results = decoding.generate_text(TINY, params, vocab, texts, config,
                                     max_input_length=16, batch_size=3)
  warnings = [r for r in caplog.records if "Cut 2 of 4 inputs" in r.message]
  assert len(warnings) == 1
  enc = np.full((4, 16), PAD, np.int32)
  for row, text in zip(enc, texts):
    start = [TINY.bos_id] if encoder_bos else []
    ids = start + vocab.encode(text)[:16 - len(start) - 1] + [EOS]
    row[:len(ids)] = ids
  direct = decoding.decode(TINY, params, enc, config)
  for i, result in enumerate(results):
    n = int(direct.lengths[i])
    assert result["tokens"] == direct.tokens[i, :n].tolist()
    assert result["exit_layers"] == direct.exit_layers[i, :n].tolist()
    assert result["text"] == vocab.decode(result["tokens"])
  with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
    decoding.generate_text(TINY, params, vocab, ["ok", "  "], config, 16)
  # An undertrained model that predicts `<mask>` everywhere: the ids say so,
  # the text does not show special tokens (as batch_decode of the export).
  bias = np.array(params["final_logits_bias"])
  bias[TINY.mask_id] = 1e3
  masked, = decoding.generate_text(TINY, {**params, "final_logits_bias": bias},
                                   vocab, texts[:1], config, 16)
  assert masked["tokens"] == [TINY.mask_id] and masked["text"] == ""


@pytest.mark.integration  # Three decode programs; one: test_generate_text.
def test_decoding_in_batches_pads_the_last_and_keeps_oracle_lengths():
  """The loop generate_text and generation_eval share: a padded last batch
  and per-input target lengths give what one direct batch gives."""
  _, _, params = hf_reference.plain_model(seed=33)
  config = DecodeConfig(max_length=8, length_mode="oracle")
  rng = np.random.default_rng(3)
  enc = random_tokens(rng, TINY, 5, 12)
  inputs = [row[row != PAD].tolist() for row in enc]
  targets = [3, 8, 1, 5, 6]
  decoded, exits = decoding.decode_in_batches(
      TINY, params, config, inputs, batch_size=2, length=12,
      target_lengths=targets)
  direct = decoding.decode(TINY, params, enc, config, np.asarray(targets))
  np.testing.assert_array_equal(exits, direct.exit_layers)
  assert len(decoded) == 5
  for i, out in enumerate(decoded):
    n = int(direct.lengths[i])
    assert n <= targets[i]
    assert out == {"tokens": direct.tokens[i, :n].tolist(),
                   "exit_layers": direct.exit_layers[i, :n].tolist()}
