"""The PyTorch ELMER shipped in every export runs without elmer_jax: a copy
of elmer_jax/export/hf_module/ alone builds a model and generates."""

import ast
import os
import shutil
import subprocess
import sys

from elmer_jax.export import exporting

ALLOWED = {"torch", "transformers", "huggingface_hub"}

# elmer_jax (and tasks/) is installed in the venv: a finder refuses it, so
# that the import of a copied file fails if it reaches for either.
BUILD_AND_GENERATE = """
import importlib.abc, json, sys
class Refuse(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("elmer_jax", "tasks"):
      raise ImportError(f"{name} must not be imported here")
sys.meta_path.insert(0, Refuse())
sys.path.insert(0, sys.argv[1])
try:
  import elmer_jax
  raise SystemExit("elmer_jax is importable")
except ImportError:
  pass
import torch
from shipped.configuration_elmer import ElmerBartConfig
from shipped.modeling_elmer import ElmerForConditionalGeneration
config = ElmerBartConfig(
    vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=2,
    encoder_attention_heads=2, decoder_attention_heads=2,
    encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
    pad_token_id=1, bos_token_id=0, eos_token_id=2, mask_token_id=39,
    unk_token_id=3)
torch.manual_seed(0)
model = ElmerForConditionalGeneration(config).eval()
out = model.generate(torch.tensor([[0, 5, 6, 7, 2]]), max_length=6,
                     return_dict_in_generate=True)
print(json.dumps([list(out.sequences.shape), list(out.exit_layers.shape),
                  sorted(m for m in sys.modules if m.split(".")[0] in
                         ("elmer_jax", "tasks"))]))
"""


def _imported_roots(path: str) -> set[str]:
  roots = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      roots.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      roots.add(node.module.split(".")[0])
  return roots


def test_shipped_files_import_only_torch_transformers_and_stdlib():
  for name in exporting.MODULE_FILES:
    roots = _imported_roots(os.path.join(exporting.MODULE_DIR, name))
    assert roots - ALLOWED - set(sys.stdlib_module_names) == set(), name


def test_a_bare_copy_builds_a_model_and_generates(tmp_path):
  package = tmp_path / "shipped"
  package.mkdir()
  (package / "__init__.py").write_text("")
  for name in exporting.MODULE_FILES:
    shutil.copy(os.path.join(exporting.MODULE_DIR, name), package / name)
  result = subprocess.run(
      [sys.executable, "-I", "-c", BUILD_AND_GENERATE, str(tmp_path)],
      capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == "[[1, 6], [1, 6], []]"
