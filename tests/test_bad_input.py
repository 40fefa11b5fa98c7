"""Bad inputs fail early with errors that name the argument and the range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elmer_jax.model import Elmer, validate_inputs
from tests import hf_reference
from tests.helpers import TINY, compiled_apply

LAYERS = TINY.decoder_layers


@pytest.fixture(scope="module")
def params():
  # Any weights will do, and HF's (torch) initialiser compiles nothing.
  return hf_reference.random_params(TINY, seed=0)


def _tokens(batch, length, value=5):
  return np.full((batch, length), value, np.int32)


def _traced_call(params, *args, **kwargs):
  """Calls the model under jit; shape errors surface while tracing."""
  return jax.jit(lambda p, *a: Elmer(TINY).apply({"params": p}, *a, **kwargs)
                 )(params, *args)


def test_decoder_longer_than_position_table(params):
  dec = _tokens(2, TINY.max_positions + 1)
  with pytest.raises(ValueError, match=(
      r"decoder_input_tokens has length 41.*max_positions=40.*1\.\.40")):
    _traced_call(params, _tokens(2, 8), dec)


def test_encoder_longer_than_position_table(params):
  with pytest.raises(ValueError, match=r"encoder_input_tokens has length 50"):
    _traced_call(params, _tokens(2, 50), _tokens(2, 8))


def test_mismatched_batch_sizes(params):
  with pytest.raises(ValueError, match=(
      r"decoder_input_tokens has batch size 3 but encoder_input_tokens has 2")):
    _traced_call(params, _tokens(2, 8), _tokens(3, 8))


def test_exit_layers_with_the_wrong_shape(params):
  with pytest.raises(ValueError, match=(
      r"exit_layers has shape \(2, 7\); expected \(2, 8\)")):
    _traced_call(params, _tokens(2, 8), _tokens(2, 8),
                 np.zeros((2, 7), np.int32))


@pytest.mark.parametrize("bad", [-1, LAYERS])
def test_exit_layers_out_of_range(params, bad):
  exits = np.zeros((2, 8), np.int32)
  exits[1, 3] = bad
  pattern = rf"exit_layers has values in \[{min(bad, 0)}, {max(bad, 0)}\].*\[0, {LAYERS - 1}\]"
  with pytest.raises(ValueError, match=pattern):
    Elmer(TINY).apply({"params": params}, _tokens(2, 8), _tokens(2, 8), exits)
  # The same check runs host-side on a concrete batch before a jitted step.
  with pytest.raises(ValueError, match=pattern):
    validate_inputs(TINY, _tokens(2, 8), _tokens(2, 8), exits)


def test_float_exit_layers(params):
  with pytest.raises(ValueError, match="exit_layers must be integers"):
    _traced_call(params, _tokens(2, 8), _tokens(2, 8),
                 np.zeros((2, 8), np.float32))


def test_token_ids_outside_vocabulary():
  with pytest.raises(ValueError, match=(
      r"decoder_input_tokens has values in \[5, 96\].*vocab_size=96")):
    validate_inputs(TINY, _tokens(2, 8), np.array([[5, 96]], np.int32))


def test_one_dimensional_tokens(params):
  with pytest.raises(ValueError, match=r"encoder_input_tokens must be 2-D"):
    _traced_call(params, np.arange(8, dtype=np.int32), _tokens(1, 8))


def test_segment_ids_on_one_side_only(params):
  with pytest.raises(ValueError, match="segment ids on both"):
    _traced_call(params, _tokens(2, 8), _tokens(2, 8),
                 decoder_segment_ids=jnp.ones((2, 8), jnp.int32))


@pytest.mark.parametrize("changes,pattern", [
    ({"d_model": 30}, r"d_model=30 must be divisible by .*num_heads=4"),
    ({"remat_policy": "some"}, r"remat_policy='some'; expected one of"),
    ({"mask_id": 200}, r"mask_id=200 is outside the vocabulary \[0, 96\)"),
    ({"decoder_layers": 0}, r"decoder_layers must be >= 1"),
])
def test_inconsistent_configs(changes, pattern):
  with pytest.raises(ValueError, match=pattern):
    TINY.replace(**changes)


def test_valid_config_accepts_what_the_errors_promise(params):
  """The edge of each allowed range is accepted."""
  exits = np.full((2, TINY.max_positions), LAYERS - 1, np.int32)
  out = compiled_apply(TINY)({"params": params},
                            _tokens(2, TINY.max_positions),
                            _tokens(2, TINY.max_positions), exits)
  assert out.logits.shape == (2, TINY.max_positions, TINY.vocab_size)
