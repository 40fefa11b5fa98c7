"""Reading and writing the weight files of a Hugging Face directory.

Weights are read with safetensors (single file or sharded with an index);
a `pytorch_model.bin` only through `torch.load(weights_only=True)`, which
refuses pickled code. Arrays come back as NumPy in their saved precision
(bfloat16 is widened to float32, which is exact).
"""

import json
import os

import numpy as np
import safetensors
import safetensors.torch
import torch

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
  if tensor.dtype == torch.bfloat16:
    tensor = tensor.float()
  return tensor.numpy()


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    with safetensors.safe_open(path, framework="pt") as f:
      return {k: _numpy(f.get_tensor(k)) for k in f.keys()}
  except (safetensors.SafetensorError, OSError) as e:
    raise ValueError(f"{path} is not a readable safetensors file (half "
                     f"written?): {e}") from e


def read_state_dict(hf_dir: str) -> dict[str, np.ndarray]:
  """All weights of `hf_dir`, by Hugging Face key."""
  path = os.path.join(hf_dir, SAFETENSORS)
  if os.path.exists(path):
    return _read_safetensors(path)
  index = os.path.join(hf_dir, SAFETENSORS_INDEX)
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
      state.update(_read_safetensors(os.path.join(hf_dir, shard)))
    return state
  path = os.path.join(hf_dir, PYTORCH_BIN)
  if os.path.exists(path):
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file.
      raise ValueError(f"{path} could not be read as a weights-only PyTorch "
                       f"checkpoint: {e}") from e
    return {k: _numpy(v) for k, v in loaded.items()}
  raise FileNotFoundError(f"{hf_dir} has no {SAFETENSORS}, {SAFETENSORS_INDEX} "
                          f"or {PYTORCH_BIN}.")


def write_safetensors(state: dict[str, np.ndarray], path: str,
                      dtype: str = "float32") -> None:
  """Writes `state` as `dtype` with the metadata transformers expects."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r}; expected one of {sorted(DTYPES)}.")
  tensors = {k: torch.tensor(np.asarray(v, np.float32)).to(DTYPES[dtype])
             for k, v in state.items()}
  safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
