"""The PyTorch peer of the trainer's step: stock transformers BART with
ELMER's LPLM written over its layers, for side-by-side throughput.

Per step: exit layers drawn per token, the encoder, the decoder layers of
`BartForConditionalGeneration` with a bidirectional (all-zero additive 4-D)
mask and copy-on-exit (`detach` of the exit state), cross-entropy of the tied
head at each token's exit state, backward, gradient clipping and AdamW:
what `elmer_jax.training.train_step` does, with dropout as configured.
`bench/train_throughput.py --peer` runs it beside the trainer's step.
"""

from typing import Callable

import numpy as np
import torch
import transformers

from elmer_jax.export import hf_config
from elmer_jax.model.config import ElmerConfig


def bart(config: ElmerConfig, attn_implementation: str = "sdpa"
         ) -> transformers.BartForConditionalGeneration:
  """A randomly initialised stock BART with the ELMER config's shape."""
  fields = hf_config.to_hf(config)  # The shape our export writes.
  for elmer_only in ("model_type", "architectures", "auto_map", "soft_exit"):
    fields.pop(elmer_only)
  bart_config = transformers.BartConfig(
      **fields, attn_implementation=attn_implementation)
  torch.manual_seed(0)
  return transformers.BartForConditionalGeneration(bart_config).train()


def lplm_loss(model: transformers.BartForConditionalGeneration,
              enc: torch.Tensor, dec: torch.Tensor, targets: torch.Tensor,
              exits: torch.Tensor) -> torch.Tensor:
  """Token-mean cross-entropy at each token's exit layer, copy on exit."""
  bart_model, cfg = model.model, model.config
  self_mask = torch.zeros(dec.shape[0], 1, dec.shape[1], dec.shape[1])
  cross_mask = torch.zeros(dec.shape[0], 1, dec.shape[1], enc.shape[1])
  encoded = bart_model.encoder(
      input_ids=enc, attention_mask=(enc != cfg.pad_token_id).long()
  ).last_hidden_state
  decoder = bart_model.decoder
  hidden = decoder.layernorm_embedding(decoder.embed_tokens(dec)
                                       + decoder.embed_positions(dec))
  hidden = torch.nn.functional.dropout(hidden, cfg.dropout, model.training)
  cache = torch.zeros_like(hidden)
  exits = exits[..., None]
  for index, layer in enumerate(decoder.layers):
    hidden = layer(hidden, attention_mask=self_mask,
                   encoder_hidden_states=encoded,
                   encoder_attention_mask=cross_mask, use_cache=False)
    if isinstance(hidden, tuple):
      hidden = hidden[0]
    cache = torch.where(exits == index, hidden, cache)
    hidden = torch.where(exits <= index, cache.detach(), hidden)
  logits = model.lm_head(cache) + model.final_logits_bias
  return torch.nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_step(config: ElmerConfig, batch: dict[str, np.ndarray],
              threads: int, attn_implementation: str = "sdpa"
              ) -> tuple[Callable[[], float], dict]:
  """A training step on `batch` (returns its loss) after one warm-up step,
  and what it runs on."""
  torch.set_num_threads(threads)
  model = bart(config, attn_implementation)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                betas=(0.9, 0.98), eps=1e-6,
                                weight_decay=0.01)
  enc = torch.as_tensor(batch["encoder_input_tokens"], dtype=torch.long)
  dec = torch.as_tensor(batch["decoder_input_tokens"], dtype=torch.long)
  targets = torch.as_tensor(batch["decoder_target_tokens"], dtype=torch.long)
  generator = torch.Generator().manual_seed(0)

  def step() -> float:
    exits = torch.randint(0, config.decoder_layers, dec.shape,
                          generator=generator)
    optimizer.zero_grad(set_to_none=True)
    loss = lplm_loss(model, enc, dec, targets, exits)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()

  step()
  return step, {"threads": threads, "torch": torch.__version__,
                "transformers": transformers.__version__,
                "attn_implementation": attn_implementation}
