"""Copy-on-exit: forward values and gradients against a PyTorch reference."""

import functools

import jax
import numpy as np
import pytest
import torch

from elmer_jax.export import param_map
from elmer_jax.model import Elmer
from elmer_jax.objectives import lplm_loss
from tests import hf_reference
from tests.helpers import TINY, compiled_apply, random_tokens, variants

LAYERS = TINY.decoder_layers


def _setup(scan: bool = False, seed: int = 3):
  config = TINY.replace(scan_layers=scan)
  hf = hf_reference.random_bart(config, seed=seed)
  params = param_map.from_hf(hf_reference.state_dict_numpy(hf), config)
  rng = np.random.default_rng(seed)
  enc = random_tokens(rng, config, 3, 11)
  enc[2, 8:] = config.pad_id
  dec = random_tokens(rng, config, 3, 10)
  dec[1, 7:] = config.pad_id
  exits = rng.integers(0, LAYERS, dec.shape).astype(np.int32)
  return config, hf, params, enc, dec, exits


@pytest.mark.parametrize("scan", variants(False, True))
def test_random_exit_logits_match_torch_reference(scan):
  config, hf, params, enc, dec, exits = _setup(scan)
  out = compiled_apply(config)(
      {"params": params}, enc, dec, exits, return_all_layers=True)
  with torch.no_grad():
    ref_exit, ref_layers = hf_reference.torch_elmer_decoder(
        hf, enc, dec, exits, config.pad_id)
  np.testing.assert_allclose(np.asarray(out.logits), ref_exit.numpy(),
                             atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out.layer_logits), ref_layers.numpy(),
                             atol=1e-4, rtol=0)
  # The exits matter: tokens leaving early differ from the last-layer logits.
  last = hf_reference.bidirectional_logits(hf, enc, dec, config.pad_id)
  early = exits < LAYERS - 1
  assert np.abs(np.asarray(out.logits)[early] - last[early]).max() > 1e-2


def test_exited_token_logits_frozen_above_exit_layer():
  config, _, params, enc, dec, exits = _setup()
  out = compiled_apply(config)({"params": params}, enc, dec, exits,
                               return_all_layers=True)
  layer_logits = np.asarray(out.layer_logits)
  for b, t in np.ndindex(exits.shape):
    e = exits[b, t]
    np.testing.assert_array_equal(layer_logits[e:, b, t],
                                  np.broadcast_to(layer_logits[e, b, t],
                                                  layer_logits[e:, b, t].shape))
    # Same state; the two head matmuls differ only in shape (rounding).
    np.testing.assert_allclose(layer_logits[e, b, t], out.logits[b, t],
                               atol=1e-5, rtol=0)


@functools.partial(jax.jit, static_argnums=0)
def _output_grads(config, params, perturbations, enc, dec, exits, weights):
  def loss(perturbations):
    out = Elmer(config).apply(
        {"params": params, "perturbations": perturbations}, enc, dec, exits)
    return lplm_loss(out.logits, dec, weights, exits, LAYERS)[0]
  return jax.grad(loss)(perturbations)


def _loss_of_token(config, params, enc, dec, exits, token):
  """d(loss of one token)/d(each decoder layer's output), via flax perturb
  (zero perturbations of the shapes init would give)."""
  shapes = jax.eval_shape(Elmer(config).init, jax.random.key(0), enc, dec,
                          exits)["perturbations"]
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  weights = np.zeros(dec.shape, np.float32)
  weights[token] = 1.0
  grads = _output_grads(config, params, zeros, enc, dec, exits, weights)
  return [np.asarray(grads["decoder"][f"layers_{l}"]["output"])
          for l in range(LAYERS)]


def test_exited_token_gets_no_gradient_from_later_tokens():
  config, _, params, enc, dec, _ = _setup()
  early, late = (0, 2), (0, 5)
  exits = np.full(dec.shape, LAYERS - 1, np.int32)
  exits[early] = 0
  grads = _loss_of_token(config, params, enc, dec, exits, late)
  # The early token's state after layer 0 is frozen for layers 1..L-1: the
  # late token's loss reaches it through attention, but not back into it.
  for layer in range(LAYERS):
    assert np.all(grads[layer][early] == 0.0), layer
  # The late token itself, and other non-exited tokens, do get gradient.
  assert np.abs(grads[0][late]).max() > 0
  assert np.abs(grads[0][(0, 3)]).max() > 0

  # Control: without the early exit the same token receives gradient.
  exits[early] = LAYERS - 1
  grads = _loss_of_token(config, params, enc, dec, exits, late)
  assert np.abs(grads[0][early]).max() > 0


def test_parameter_gradients_match_torch_autograd():
  config, hf, params, enc, dec, exits = _setup()
  weights = (dec != config.pad_id).astype(np.float32)

  def loss(p):
    out = Elmer(config).apply({"params": p}, enc, dec, exits)
    return lplm_loss(out.logits, dec, weights, exits, LAYERS)[0]

  ours = param_map.to_hf(jax.jit(jax.grad(loss))(params), config)

  def torch_grads(detach: bool):
    hf.zero_grad()
    logits, _ = hf_reference.torch_elmer_decoder(hf, enc, dec, exits,
                                                 config.pad_id, detach=detach)
    target = torch.as_tensor(dec, dtype=torch.long)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, config.vocab_size), target.reshape(-1),
        reduction="none")
    w = torch.as_tensor(weights).reshape(-1)
    ((nll * w).sum() / w.sum()).backward()
    return {name: p.grad.numpy().copy() for name, p in hf.named_parameters()
            if p.grad is not None}

  reference = torch_grads(detach=True)
  for name, grad in reference.items():
    key = "model.shared.weight" if name == "lm_head.weight" else name
    np.testing.assert_allclose(ours[key], grad, atol=2e-5, rtol=1e-3,
                               err_msg=name)
  # Control: the stop-gradient changes the gradients of this case.
  undetached = torch_grads(detach=False)
  name = "model.decoder.layers.0.fc1.weight"
  assert np.abs(undetached[name] - reference[name]).max() > 1e-4
