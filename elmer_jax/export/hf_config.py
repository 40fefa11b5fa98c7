"""Our ElmerConfig ↔ the `config.json` of a Hugging Face BART/ELMER directory.

Exported configs carry BART's fields (so `BartForConditionalGeneration`
loads them) plus ELMER's (special ids, soft exit, decoding defaults) and an
`auto_map` that points the Auto classes at the shipped PyTorch module.
Imported configs may be plain BART ones (RUCAIBox/elmer): ELMER's fields
then come from the tokenizer files and the weights.
"""

import json
import os
from typing import Any, Mapping, Optional

from elmer_jax.model.config import ElmerConfig

AUTO_MAP = {
    "AutoConfig": "configuration_elmer.ElmerBartConfig",
    "AutoModel": "modeling_elmer.ElmerForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_elmer.ElmerForConditionalGeneration",
}
ARCHITECTURE = "ElmerForConditionalGeneration"
# BART's LayerNorms have eps 1e-5; transformers does not make it configurable.
BART_LAYER_NORM_EPS = 1e-5


def to_hf(config: ElmerConfig, decoding: Optional[Mapping[str, Any]] = None
          ) -> dict[str, Any]:
  """The config.json fields of an exported model (`decoding`: the defaults of
  the PyTorch `generate`, e.g. exit_threshold, nar_max_length)."""
  if config.layer_norm_eps != BART_LAYER_NORM_EPS:
    raise ValueError(
        f"ElmerConfig.layer_norm_eps={config.layer_norm_eps}; BART (and so the "
        f"exported model) uses {BART_LAYER_NORM_EPS}.")
  fields = dict(
      model_type="bart", architectures=[ARCHITECTURE], auto_map=AUTO_MAP,
      vocab_size=config.vocab_size, d_model=config.d_model,
      encoder_layers=config.encoder_layers,
      decoder_layers=config.decoder_layers,
      encoder_attention_heads=config.num_heads,
      decoder_attention_heads=config.num_heads,
      encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff,
      max_position_embeddings=config.max_positions,
      activation_function="gelu", scale_embedding=False,
      dropout=config.dropout_rate,
      attention_dropout=config.attention_dropout_rate,
      activation_dropout=config.activation_dropout_rate,
      init_std=config.init_std, tie_word_embeddings=True,
      pad_token_id=config.pad_id, bos_token_id=config.bos_id,
      eos_token_id=config.eos_id, decoder_start_token_id=config.bos_id,
      forced_eos_token_id=config.eos_id, unk_token_id=config.unk_id,
      mask_token_id=config.mask_id, soft_exit=config.soft_exit)
  fields.update(decoding or {})
  return fields


def _require(fields: Mapping[str, Any], name: str, path: str) -> Any:
  if name not in fields:
    raise ValueError(f"{path} lacks {name!r}; a BART config has it.")
  return fields[name]


def from_hf(fields: Mapping[str, Any], path: str, *, soft_exit: bool,
            special_ids: Mapping[str, int]) -> ElmerConfig:
  """ElmerConfig for a BART/ELMER config.json (`path` names it in errors).

  `soft_exit` says whether the weights have `concat_head`; `special_ids`
  (`<mask>`, `<unk>` ids from the tokenizer files) fill ids a BART config
  lacks.
  """
  get = lambda name: _require(fields, name, path)
  for name, expected in (("activation_function", "gelu"),
                         ("scale_embedding", False),
                         ("normalize_before", False), ("add_final_layer_norm",
                                                       False)):
    if fields.get(name, expected) != expected:
      raise ValueError(f"{path}: {name}={fields[name]!r}; ELMER (BART) "
                       f"needs {expected!r}.")
  for side in ("encoder", "decoder"):
    if get(f"{side}_attention_heads") != get("encoder_attention_heads") or (
        get(f"{side}_ffn_dim") != get("encoder_ffn_dim")):
      raise ValueError(f"{path}: encoder and decoder differ in heads or FFN "
                       "width; ElmerConfig has one of each.")
  ids = {}
  for name, token in (("mask_token_id", "<mask>"), ("unk_token_id", "<unk>")):
    value = fields.get(name, special_ids.get(token))
    if value is None:
      raise ValueError(f"{path} has no {name!r} and the tokenizer files name "
                       f"no {token!r}; ELMER needs its id.")
    ids[name] = value
  return ElmerConfig(
      vocab_size=get("vocab_size"), d_model=get("d_model"),
      num_heads=get("encoder_attention_heads"), d_ff=get("encoder_ffn_dim"),
      encoder_layers=get("encoder_layers"),
      decoder_layers=get("decoder_layers"),
      max_positions=get("max_position_embeddings"),
      dropout_rate=fields.get("dropout", 0.1),
      attention_dropout_rate=fields.get("attention_dropout", 0.0),
      activation_dropout_rate=fields.get("activation_dropout", 0.0),
      init_std=fields.get("init_std", 0.02), pad_id=get("pad_token_id"),
      bos_id=get("bos_token_id"), eos_id=get("eos_token_id"),
      unk_id=ids["unk_token_id"], mask_id=ids["mask_token_id"],
      soft_exit=soft_exit)


def read(hf_dir: str) -> dict[str, Any]:
  """The fields of `hf_dir/config.json`."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: is {hf_dir} a Hugging Face "
                            "model directory?")
  with open(path) as f:
    return json.load(f)
