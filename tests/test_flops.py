"""The FLOPs formula against a count of the model's actual matrix products."""

import math

import jax
import jax.extend
import numpy as np
import pytest

from elmer_jax import flops
from elmer_jax.model import Elmer
from elmer_jax.model.params import init_params
from tests.helpers import TINY


def _dot_flops(jaxpr) -> int:
  """2 * output size * contracted size, summed over every dot_general."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2 * math.prod(out) * math.prod(lhs[i] for i in lhs_contract)
  for sub in jax.extend.core.subjaxprs(jaxpr):
    total += _dot_flops(sub)
  return total


@pytest.mark.parametrize("enc_len,dec_len", [(9, 5), (16, 16)])
def test_forward_flops_count_every_matmul_of_the_model(enc_len, dec_len):
  params = init_params(TINY, jax.random.key(0))
  enc = np.full((1, enc_len), 5, np.int32)
  dec = np.full((1, dec_len), 5, np.int32)
  jaxpr = jax.make_jaxpr(
      lambda p: Elmer(TINY).apply({"params": p}, enc, dec).logits)(params)
  assert flops.forward_flops(TINY, enc_len, dec_len) == _dot_flops(jaxpr.jaxpr)
  assert flops.train_flops(TINY, enc_len, dec_len) == 3 * _dot_flops(
      jaxpr.jaxpr)
