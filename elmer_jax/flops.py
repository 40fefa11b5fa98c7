"""Matmul FLOPs of ELMER, for throughput and MFU figures.

Counts 2 FLOPs per multiply-add of every matrix product (projections, FFN,
attention scores and values, the LM head at the exit states); embeddings,
norms, softmax and elementwise work are left out, as in the usual MFU
convention. A training step costs three forward passes (backward = 2x).
"""

from typing import Optional, Sequence

from elmer_jax.model.config import ElmerConfig



def forward_flops(config: ElmerConfig, encoder_length: int,
                  decoder_length: int,
                  running: Optional[Sequence[int]] = None) -> int:
  """Matmul FLOPs of one sequence's forward pass (exit logits only).

  `running`: per decoder layer, the tokens whose queries, cross-attention and
  FFN are computed (all `decoder_length` by default; fewer when exited tokens
  are skipped, which gives the executed rather than the model FLOPs).
  """
  d, f, v = config.d_model, config.d_ff, config.vocab_size
  s, t = encoder_length, decoder_length
  attention = lambda queries, keys: (4 * queries * d * d + 4 * keys * d * d
                                     + 4 * queries * keys * d)
  ffn = lambda tokens: 4 * tokens * d * f
  encoder_layer = attention(s, s) + ffn(s)
  decoder_layer = lambda q: attention(q, t) + attention(q, s) + ffn(q)
  running = running or [t] * config.decoder_layers
  lm_head = 2 * t * d * v
  return (config.encoder_layers * encoder_layer
          + sum(decoder_layer(q) for q in running) + lm_head)


def train_flops(config: ElmerConfig, encoder_length: int,
                decoder_length: int,
                running: Optional[Sequence[int]] = None) -> int:
  """Matmul FLOPs of forward + backward for one sequence."""
  return 3 * forward_flops(config, encoder_length, decoder_length, running)
