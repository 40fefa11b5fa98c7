"""Generate with an exported directory through transformers and PyTorch only:
what a user of the Hugging Face export runs.

  HF_HUB_OFFLINE=1 python -m elmer_jax.export.hf_generate --hf_dir=OUT \
      --text="Paris is the capital of France." [--exit_threshold=2.0]
"""

from absl import app, flags
import torch
import transformers

_HF_DIR = flags.DEFINE_string("hf_dir", None, "An exported directory.")
_TEXTS = flags.DEFINE_multi_string("text", [], "Input texts.")
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length", None, "Decoder slots; default: the exported config's "
    "(the run's decoder_length).")
_THRESHOLD = flags.DEFINE_float(
    "exit_threshold", None, "Entropy early exit threshold (nats); 0 turns it "
    "off; default: the exported config's.")


def main(argv):
  del argv
  if not _HF_DIR.value or not _TEXTS.value:
    raise app.UsageError("--hf_dir and at least one --text are required.")
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
      _HF_DIR.value, trust_remote_code=True).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(_HF_DIR.value)
  batch = tokenizer(_TEXTS.value, padding=True, return_tensors="pt")
  with torch.inference_mode():
    out = model.generate(**batch, max_length=_MAX_LENGTH.value,
                         exit_threshold=_THRESHOLD.value,
                         return_dict_in_generate=True)
  for text, tokens, length, exits in zip(_TEXTS.value, out.sequences,
                                         out.lengths, out.exit_layers):
    output = tokenizer.decode(tokens[:length], skip_special_tokens=True)
    print(f"{text}\n  -> {output}\n"
          f"     exit layers {exits[:length].tolist()}")


def run() -> None:
  app.run(main)


if __name__ == "__main__":
  run()
