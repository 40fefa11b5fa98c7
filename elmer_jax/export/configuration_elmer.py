"""The Hugging Face config of an exported ELMER: BART's fields plus ELMER's.

Shipped into every exported directory (with modeling_elmer.py) for
`trust_remote_code`; it imports only transformers. `model_type` is "elmer"
so that `AutoModelForSeq2SeqLM` without remote code refuses rather than
silently building a causal BART; `BartForConditionalGeneration` still loads
the weights (with a warning about the model type).
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

  model_type = "elmer"

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
