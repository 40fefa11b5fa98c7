"""Last-layer logits agree with transformers' BART run bidirectionally."""

import numpy as np
import pytest

from elmer_jax import gin_utils
from elmer_jax.export import param_map
from tests import hf_reference
from tests.helpers import TINY, compiled_apply, random_tokens


def _config(size: str):
  if size == "tiny":
    return TINY
  gin_utils.parse([f"models/{size}.gin"])
  return gin_utils.macro("MODEL_CONFIG")


def _batch(config, enc_len, dec_len):
  rng = np.random.default_rng(0)
  enc = random_tokens(rng, config, 2, enc_len)
  enc[1, enc_len - 3:] = config.pad_id
  dec = np.full((2, dec_len), config.mask_id, np.int32)
  dec[:, 0] = config.bos_id
  dec[1, dec_len - 2:] = config.pad_id
  return enc, dec


@pytest.mark.parametrize("size,scan", [
    ("tiny", False), ("tiny", True),
    pytest.param("base", False, marks=pytest.mark.slow)])
def test_last_layer_logits_match_bidirectional_bart(size, scan):
  config = _config(size).replace(scan_layers=scan)
  hf = hf_reference.random_bart(config, seed=1)
  params = param_map.from_hf(hf_reference.state_dict_numpy(hf), config)
  enc, dec = _batch(config, 13, 9)

  ours = compiled_apply(config)({"params": params}, enc, dec).logits
  reference = hf_reference.bidirectional_logits(hf, enc, dec, config.pad_id)

  assert ours.shape == reference.shape == (2, 9, config.vocab_size)
  np.testing.assert_allclose(np.asarray(ours), reference, atol=1e-4, rtol=0)


def test_decoder_is_bidirectional():
  """A change to the last decoder token moves the logits of the first one."""
  config = TINY
  hf = hf_reference.random_bart(config, seed=2)
  params = param_map.from_hf(hf_reference.state_dict_numpy(hf), config)
  enc, dec = _batch(config, 7, 6)
  changed = dec.copy()
  changed[:, 5] = 7
  apply = compiled_apply(config)
  first = apply({"params": params}, enc, dec).logits[0, 0]
  after = apply({"params": params}, enc, changed).logits[0, 0]
  assert np.abs(np.asarray(first - after)).max() > 1e-3
