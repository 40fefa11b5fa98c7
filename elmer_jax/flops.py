"""Matmul FLOPs of ELMER, for throughput and MFU figures.

Counts 2 FLOPs per multiply-add of every matrix product (projections, FFN,
attention scores and values, the LM head at the exit states); embeddings,
norms, softmax and elementwise work are left out, as in the usual MFU
convention. A training step costs three forward passes (backward = 2x).
"""

from elmer_jax.model.config import ElmerConfig


def forward_flops(config: ElmerConfig, encoder_length: int,
                  decoder_length: int) -> int:
  """Matmul FLOPs of one sequence's forward pass (exit logits only)."""
  d, f, v = config.d_model, config.d_ff, config.vocab_size
  s, t = encoder_length, decoder_length
  attention = lambda queries, keys: (4 * queries * d * d + 4 * keys * d * d
                                     + 4 * queries * keys * d)
  ffn = lambda tokens: 4 * tokens * d * f
  encoder_layer = attention(s, s) + ffn(s)
  decoder_layer = attention(t, t) + attention(t, s) + ffn(t)
  lm_head = 2 * t * d * v
  return (config.encoder_layers * encoder_layer
          + config.decoder_layers * decoder_layer + lm_head)


def train_flops(config: ElmerConfig, encoder_length: int,
                decoder_length: int) -> int:
  """Matmul FLOPs of forward + backward for one sequence."""
  return 3 * forward_flops(config, encoder_length, decoder_length)
