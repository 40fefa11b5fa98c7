"""Golden parameter shapes and logical axes; the HF name map round trips."""

import glob
import os

import flax
import jax
import numpy as np
import pytest

from elmer_jax import gin_utils
from elmer_jax.export import param_map
from elmer_jax.model import params as model_params
from tests import hf_reference
from tests.helpers import TINY

AXIS_NAMES = {"batch", "length", "embed", "heads", "kv", "mlp", "vocab",
              "layers"}

# Written by hand from BART's layout, not read off the code.
EXPECTED_AXES = {
    "shared/embedding": ("vocab", "embed"),
    "final_logits_bias": ("vocab",),
    "embed_positions/embedding": ("length", "embed"),
    "q_proj/kernel": ("embed", "heads", "kv"),
    "k_proj/kernel": ("embed", "heads", "kv"),
    "v_proj/kernel": ("embed", "heads", "kv"),
    "q_proj/bias": ("heads", "kv"),
    "k_proj/bias": ("heads", "kv"),
    "v_proj/bias": ("heads", "kv"),
    "out_proj/kernel": ("heads", "kv", "embed"),
    "out_proj/bias": ("embed",),
    "fc1/kernel": ("embed", "mlp"),
    "fc1/bias": ("mlp",),
    "fc2/kernel": ("mlp", "embed"),
    "fc2/bias": ("embed",),
    "/scale": ("embed",),
    "norm/bias": ("embed",),
    "layernorm_embedding/bias": ("embed",),
}


def _base_config():
  gin_utils.parse(["models/base.gin"])
  return gin_utils.macro("MODEL_CONFIG")


def test_base_has_the_published_parameter_count():
  assert model_params.count_params(_base_config()) == 139_420_416


def test_base_shapes_are_bart_base_shapes():
  shapes = model_params.flat_shapes(_base_config())
  assert shapes["shared/embedding"] == (50265, 768)
  assert shapes["final_logits_bias"] == (50265,)
  assert shapes["encoder/embed_positions/embedding"] == (1026, 768)
  assert shapes["decoder/embed_positions/embedding"] == (1026, 768)
  assert shapes["decoder/layers_5/encoder_attn/q_proj/kernel"] == (768, 12, 64)
  assert shapes["decoder/layers_5/encoder_attn/out_proj/kernel"] == (12, 64,
                                                                      768)
  assert shapes["encoder/layers_0/ffn/fc1/kernel"] == (768, 3072)
  assert "encoder/layers_6/ffn/fc1/kernel" not in shapes
  assert "decoder/layers_5/ffn/fc2/bias" in shapes


def test_large_has_bart_large_parameter_count():
  gin_utils.parse(["models/large.gin"])
  assert model_params.count_params(gin_utils.macro("MODEL_CONFIG")) == (
      406_291_456)


@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_the_expected_logical_axes(scan):
  config = TINY.replace(scan_layers=scan)
  axes = flax.traverse_util.flatten_dict(
      model_params.logical_axes(config), sep="/")
  assert len(axes) == len(model_params.flat_shapes(config))
  for path, spec in axes.items():
    matches = [v for k, v in EXPECTED_AXES.items() if path.endswith(k)]
    assert len(matches) == 1, path
    expected = matches[0]
    if scan and "/layers/" in path:
      expected = ("layers",) + expected
    assert tuple(spec) == expected, path
    assert set(spec) <= AXIS_NAMES


@pytest.mark.parametrize("scan", [False, True])
def test_hf_round_trips_are_bitwise(scan):
  config = TINY.replace(scan_layers=scan)
  hf = hf_reference.state_dict_numpy(hf_reference.random_bart(config, seed=4))
  params = param_map.from_hf(hf, config)
  back = param_map.to_hf(params, config)
  untied = {k: v for k, v in hf.items() if k not in param_map.TIED_ALIASES}
  assert back.keys() == untied.keys()
  for key in untied:
    np.testing.assert_array_equal(back[key], untied[key], err_msg=key)

  ours = model_params.init_params(config, jax.random.key(5))
  again = param_map.from_hf(param_map.to_hf(ours, config), config)
  jax.tree.map(np.testing.assert_array_equal, ours, again)


def test_scanned_and_per_layer_layouts_convert_losslessly():
  per_layer = model_params.init_params(TINY, jax.random.key(6))
  flat = {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(per_layer, sep="/").items()}
  stacked = param_map.stack_layers(flat)
  assert stacked.keys() == set(model_params.flat_shapes(
      TINY.replace(scan_layers=True)))
  assert param_map.unstack_layers(stacked).keys() == flat.keys()
  for key, value in param_map.unstack_layers(stacked).items():
    np.testing.assert_array_equal(value, flat[key])


def test_hf_missing_key_and_wrong_shape_are_named():
  hf = hf_reference.state_dict_numpy(hf_reference.random_bart(TINY, seed=7))
  missing = dict(hf)
  del missing["model.decoder.layers.1.fc2.bias"]
  with pytest.raises(ValueError, match=r"model\.decoder\.layers\.1\.fc2\.bias"):
    param_map.from_hf(missing, TINY)
  wrong = dict(hf)
  wrong["model.encoder.layers.0.fc1.weight"] = np.zeros((TINY.d_ff + 1,
                                                         TINY.d_model))
  with pytest.raises(ValueError, match=r"fc1\.weight.*\(65, 32\).*\(64, 32\)"):
    param_map.from_hf(wrong, TINY)
  extra = dict(hf, **{"model.decoder.concat_head.weight": np.zeros((2, 2))})
  with pytest.raises(ValueError, match="unexpected.*concat_head"):
    param_map.from_hf(extra, TINY)


def test_every_shipped_gin_file_parses():
  root = gin_utils.GIN_CONFIGS_DIR
  files = sorted(glob.glob(os.path.join(root, "**", "*.gin"), recursive=True))
  assert files
  for path in files:
    gin_utils.parse([os.path.relpath(path, root)])
    if os.path.dirname(os.path.relpath(path, root)) == "models":
      assert model_params.count_params(gin_utils.macro("MODEL_CONFIG")) > 0
