"""Autoregressive baseline: greedy decoding of a BART the size of an ELMER.

ELMER's claim is speed: all target tokens in one decoder pass instead of one
pass per token. This times the alternative it replaces, Hugging Face's
`BartForConditionalGeneration.generate` (greedy, KV cache, PyTorch on CPU or a CUDA GPU) with
the same shape as an `ElmerConfig`. Weights are random: speed does not depend
on them, and `min_new_tokens` keeps `</s>` from ending a sequence early, so
every run makes exactly `target_tokens` tokens per sequence. A timed call
includes the encoder, as ELMER's decoding does. Attention is transformers'
default (SDPA), its fastest CPU path.

`bench/generation.py` runs it beside ELMER's decoding (a script run by path
has `bench/` on sys.path, so it imports this as `ar_baseline`).
"""

import statistics
import time

import numpy as np
import torch
import transformers

from elmer_jax.export import hf_config
from elmer_jax.model.config import ElmerConfig


def bart_config(config: ElmerConfig) -> transformers.BartConfig:
  """A BART with ELMER's shape and special ids, as the exporter writes it,
  for autoregressive generation (no dropout, BART's `</s>` start token)."""
  fields = hf_config.to_hf(config)
  for key in ("auto_map", "architectures"):
    del fields[key]
  fields.update(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                decoder_start_token_id=config.eos_id,
                forced_eos_token_id=None)
  return transformers.BartConfig(**fields)


def time_bart_greedy(config: ElmerConfig, batch: int, source_length: int,
                     target_tokens: int, repeats: int, *,
                     threads: int | None = None, seed: int = 0,
                     dtype: str = "float32", device: str = "cpu") -> dict:
  """Median seconds per batch of greedy `generate` with a KV cache, on
  `device` (`cpu` or `cuda`; a timed call ends when the GPU has finished)."""
  if device == "cuda" and not torch.cuda.is_available():
    raise ValueError("device='cuda' but torch sees no CUDA GPU (a CPU-only "
                     "torch wheel, or no GPU on this host).")
  if source_length > config.max_positions:
    raise ValueError(f"source_length={source_length} exceeds the model's "
                     f"max_positions={config.max_positions}.")
  if target_tokens + 1 > config.max_positions:
    raise ValueError(f"target_tokens={target_tokens} (+ the start token) "
                     f"exceeds max_positions={config.max_positions}.")
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = transformers.BartForConditionalGeneration(bart_config(config)).to(
      device=device, dtype=getattr(torch, dtype)).eval()
  rng = np.random.default_rng(seed)
  # Ordinary tokens only: ids below 4 are <s>, <pad>, </s>, <unk> in presets.
  input_ids = torch.as_tensor(
      rng.integers(4, config.vocab_size, (batch, source_length)),
      device=device)
  attention_mask = torch.ones_like(input_ids)

  def generate() -> float:
    start = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                         max_new_tokens=target_tokens,
                         min_new_tokens=target_tokens, num_beams=1,
                         do_sample=False, use_cache=True)
    if device == "cuda":
      torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # The output starts with decoder_start_token_id.
    if out.shape != (batch, target_tokens + 1):
      raise RuntimeError(f"generate returned shape {tuple(out.shape)}; "
                         f"expected ({batch}, {target_tokens + 1}).")
    return seconds

  with torch.inference_mode():
    generate()  # Warm-up: allocator, kernel selection.
    latencies = [generate() for _ in range(repeats)]
  median = statistics.median(latencies)
  return {
      "bench": "ar_baseline",
      "decoding": "greedy, KV cache",
      "device": (torch.cuda.get_device_name() if device == "cuda"
                 else "cpu"),
      "threads": torch.get_num_threads(),
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "dtype": str(next(model.parameters()).dtype),
      "attn_implementation": model.config._attn_implementation,  # pylint: disable=protected-access
      "params": sum(p.numel() for p in model.parameters()),
      "batch": batch,
      "source_length": source_length,
      "target_tokens": target_tokens,
      "tokens_generated": batch * target_tokens,
      "repeats": repeats,
      "median_s": round(median, 5),
      "latencies_s": [round(s, 5) for s in latencies],
      "tokens_per_s": round(batch * target_tokens / median, 1),
  }
