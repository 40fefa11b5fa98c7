"""The Hugging Face config of an exported ELMER: BART's fields plus ELMER's.

Shipped into every exported directory (with modeling_elmer.py) for
`trust_remote_code`; it imports only transformers. `model_type` stays
"bart": `AutoTokenizer` and `BartForConditionalGeneration` then read the
directory without remote code (an unknown model type would make
`AutoTokenizer` ask for `trust_remote_code`); the `auto_map` sends the Auto
model classes here when `trust_remote_code=True` is given, and without it
they build transformers' BART, whose decoder is causal.
"""

from huggingface_hub.dataclasses import strict
from transformers import BartConfig

LENGTH_MODES = ("max_length", "oracle")


@strict(accept_kwargs=True)
class ElmerBartConfig(BartConfig):
  """BART's config with the special ids and decoding options of ELMER.

  `soft_exit`: the model has `concat_head` and feeds each layer's predicted
  token to the next (fine-tuning as released). `exit_threshold` (nats; 0:
  off), `nar_length_mode`, `nar_max_length` and `collapse_repeats` are the
  defaults of `ElmerForConditionalGeneration.generate`.
  """

  model_type = "bart"

  soft_exit: bool = False
  mask_token_id: int = 50264
  unk_token_id: int = 3
  exit_threshold: float = 0.0
  nar_length_mode: str = "max_length"
  nar_max_length: int = 64
  collapse_repeats: bool = False

  def __post_init__(self, **kwargs):
    if self.nar_length_mode not in LENGTH_MODES:
      raise ValueError(f"nar_length_mode={self.nar_length_mode!r}; expected "
                       f"one of {LENGTH_MODES}.")
    super().__post_init__(**kwargs)


__all__ = ["ElmerBartConfig"]
