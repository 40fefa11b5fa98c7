"""BART's position-wise feed-forward block: fc2(dropout(gelu(fc1(x))))."""

import flax.linen as nn
import jax

from elmer_jax.model import initializers, matmul
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.dropout import Dropout


class FeedForward(nn.Module):
  config: ElmerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    cfg = self.config
    hidden = nn.Dense(
        cfg.d_ff, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
        dot_general=matmul.dot_general,
        kernel_init=initializers.normal(cfg.init_std, ("embed", "mlp")),
        bias_init=initializers.zeros(("mlp",)), name="fc1")(inputs)
    # BART's "gelu" is the exact (erf) form, not the tanh approximation.
    hidden = jax.nn.gelu(hidden, approximate=False)
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    hidden = Dropout(cfg.activation_dropout_rate)(
        hidden, deterministic=self.deterministic)
    return nn.Dense(
        cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
        dot_general=matmul.dot_general,
        kernel_init=initializers.normal(cfg.init_std, ("mlp", "embed")),
        bias_init=initializers.zeros(("embed",)), name="fc2")(hidden)
