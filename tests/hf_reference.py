"""Independent references built on PyTorch/transformers' BART.

`random_bart` makes a BART whose every tensor (biases and LayerNorms included)
is random, so a layout mistake cannot hide behind zeros and ones.
`torch_elmer_decoder` runs HF's own decoder layers with ELMER's copy-on-exit
written here in PyTorch, independently of the JAX code. `random_params` and
`random_soft_exit_model` give our parameters for such a random model.
"""

import numpy as np
import torch
import transformers

from elmer_jax.export import exporting, param_map
from elmer_jax.model.config import ElmerConfig
from tests.helpers import TINY


def bart_config(config: ElmerConfig) -> transformers.BartConfig:
  return transformers.BartConfig(
      vocab_size=config.vocab_size, d_model=config.d_model,
      encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
      encoder_attention_heads=config.num_heads,
      decoder_attention_heads=config.num_heads,
      encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff,
      max_position_embeddings=config.max_positions,
      activation_function="gelu", scale_embedding=False,
      pad_token_id=config.pad_id, bos_token_id=config.bos_id,
      eos_token_id=config.eos_id, decoder_start_token_id=config.eos_id,
      forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0,
      activation_dropout=0.0, attn_implementation="eager")


def random_bart(config: ElmerConfig, seed: int
                ) -> transformers.BartForConditionalGeneration:
  torch.manual_seed(seed)
  model = transformers.BartForConditionalGeneration(bart_config(config)).eval()
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if name.endswith(("layer_norm.weight", "layernorm_embedding.weight")):
        tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor))
      elif name.endswith(".weight"):
        # Pre-activations of order 1.5 whatever the width, so that numerics
        # such as GELU's exact vs tanh form are visible in the logits.
        fan_in = tensor.shape[-1]
        tensor.copy_(1.5 / fan_in**0.5 * torch.randn_like(tensor))
      else:
        tensor.copy_(0.1 * torch.randn_like(tensor))
  model.tie_weights()
  return model


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def random_soft_exit_model(config: ElmerConfig, seed: int):
  """(HF BART, concat_head Linear, our params) with every weight random."""
  hf = random_bart(config, seed=seed)
  concat_head = torch.nn.Linear(2 * config.d_model, config.d_model,
                                bias=False)
  with torch.no_grad():
    concat_head.weight.copy_(1.5 / (2 * config.d_model)**0.5
                             * torch.randn_like(concat_head.weight))
  state = dict(state_dict_numpy(hf),
               **{"concat_head.weight": concat_head.weight.detach().numpy()})
  return hf, concat_head, param_map.from_hf(state, config)


def random_params(config: ElmerConfig, seed: int):
  """Our parameters with every tensor random (through HF's BART names)."""
  if config.soft_exit:
    return random_soft_exit_model(config, seed)[2]
  hf = random_bart(config, seed)
  return param_map.from_hf(state_dict_numpy(hf), config)


def additive_mask(key_valid: torch.Tensor, queries: int) -> torch.Tensor:
  """(batch, 1, queries, keys) float mask: 0 = attend, very negative = not."""
  mask = torch.zeros(key_valid.shape[0], 1, queries, key_valid.shape[1])
  return mask.masked_fill(~key_valid[:, None, None, :].bool(),
                          torch.finfo(torch.float32).min)


def bidirectional_logits(model, encoder_tokens: np.ndarray,
                         decoder_tokens: np.ndarray, pad_id: int) -> np.ndarray:
  """HF BART with its decoder made bidirectional (padding-only 4-D mask)."""
  enc = torch.as_tensor(encoder_tokens, dtype=torch.long)
  dec = torch.as_tensor(decoder_tokens, dtype=torch.long)
  with torch.no_grad():
    out = model(input_ids=enc, attention_mask=(enc != pad_id).long(),
                decoder_input_ids=dec,
                decoder_attention_mask=additive_mask(dec != pad_id,
                                                     dec.shape[1]))
  return out.logits.numpy()


def decoder_start(model, encoder_tokens, decoder_tokens, pad_id: int):
  """What a decoder written over HF BART's layers starts from: encoder
  states, the embedded decoder input, and bidirectional (padding-only)
  self- and cross-attention masks."""
  bart = model.model
  enc = torch.as_tensor(encoder_tokens, dtype=torch.long)
  dec = torch.as_tensor(np.array(decoder_tokens), dtype=torch.long)
  encoded = bart.encoder(input_ids=enc,
                         attention_mask=(enc != pad_id).long()
                         ).last_hidden_state
  decoder = bart.decoder
  hidden = decoder.layernorm_embedding(decoder.embed_tokens(dec)
                                       + decoder.embed_positions(dec))
  return (encoded, hidden, additive_mask(dec != pad_id, dec.shape[1]),
          additive_mask(enc != pad_id, dec.shape[1]))


def torch_elmer_decoder(model, encoder_tokens, decoder_tokens, exit_layers,
                        pad_id: int, detach: bool = True):
  """ELMER's decoder with copy-on-exit, from HF BART's layers.

  Returns (exit logits, per-layer logits after copy) as torch tensors, so the
  caller can also differentiate through them.
  """
  exits = torch.as_tensor(exit_layers, dtype=torch.long)[..., None]
  encoded, hidden, self_mask, cross_mask = decoder_start(
      model, encoder_tokens, decoder_tokens, pad_id)
  cache = torch.zeros_like(hidden)
  layer_states = []
  for index, layer in enumerate(model.model.decoder.layers):
    hidden = layer(hidden, attention_mask=self_mask,
                   encoder_hidden_states=encoded,
                   encoder_attention_mask=cross_mask, use_cache=False)
    if isinstance(hidden, tuple):
      hidden = hidden[0]
    cache = torch.where(exits == index, hidden, cache)
    frozen = cache.detach() if detach else cache
    hidden = torch.where(exits <= index, frozen, hidden)
    layer_states.append(hidden)
  head = lambda h: model.lm_head(h) + model.final_logits_bias
  return head(cache), torch.stack([head(h) for h in layer_states])


def entropy(logits: np.ndarray) -> np.ndarray:
  log_p = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1)
  return -(log_p.exp() * log_p).sum(-1).numpy()


def plain_model(seed: int = 21, config: ElmerConfig = TINY):
  """(HF BART, no concat_head, our params from its weights)."""
  hf = random_bart(config, seed=seed)
  return hf, None, param_map.from_hf(state_dict_numpy(hf), config)


def export_and_load(config: ElmerConfig, params, path):
  """Exports `params` to `path` and loads it back as the shipped module."""
  exporting.write_hf_directory(config, params, str(path))
  return transformers.AutoModelForSeq2SeqLM.from_pretrained(
      str(path), trust_remote_code=True).eval()
