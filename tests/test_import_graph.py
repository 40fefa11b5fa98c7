"""Commands on top, libraries below: importing a library module defines no
absl flag, and no library module imports the commands or tasks/."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The old `python -m` names, each forwarding to elmer_jax/commands/.
FORWARDING = {"elmer_jax.train", "elmer_jax.generate", "elmer_jax.evaluate",
              "elmer_jax.import_hf", "elmer_jax.export.__main__",
              "elmer_jax.export.hf_generate", "elmer_jax.data.train_vocab"}
# Shipped into exports, torch only: tests/test_hf_module.py checks it.
SHIPPED = "elmer_jax.export.hf_module"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(path): path
          for path in sorted((ROOT / "elmer_jax").rglob("*.py"))}


def _library() -> dict[str, pathlib.Path]:
  return {name: path for name, path in _modules().items()
          if not name.startswith(("elmer_jax.commands", SHIPPED))
          and name not in FORWARDING}


def _imports(path: pathlib.Path, name: str) -> set[str]:
  """Absolute names of what the file imports (relative imports resolved)."""
  found = set()
  package = name.split(".") if path.name == "__init__.py" else (
      name.split(".")[:-1])
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = package[:len(package) - node.level + 1] if node.level else []
      module = ".".join([*base, *([node.module] if node.module else [])])
      found.add(module)
      found.update(f"{module}.{alias.name}" for alias in node.names)
  return found


def test_the_forwarding_modules_and_commands_exist():
  modules = _modules()
  assert FORWARDING <= set(modules)
  commands = {name.rsplit(".", 1)[1] for name in modules
              if name.startswith("elmer_jax.commands.")}
  assert commands == {"train", "generate", "evaluate", "export", "import_hf",
                      "train_vocab", "hf_generate"}


def test_no_library_module_imports_the_commands_or_tasks():
  upward = {}
  for name, path in _library().items():
    wrong = sorted(module for module in _imports(path, name)
                   if module.split(".")[0] == "tasks"
                   or module.startswith("elmer_jax.commands"))
    if wrong:
      upward[name] = wrong
  assert upward == {}


@pytest.mark.integration  # A fresh process importing TF, torch and JAX.
def test_importing_the_library_defines_no_flag():
  # A fresh process: other tests' imports would already have defined flags.
  # The train command is imported last, to show that a flag is seen.
  code = (
      "import importlib, json, sys\n"
      "from absl import flags\n"
      "before = set(flags.FLAGS)\n"
      "for name in sys.argv[1:]:\n"
      "  importlib.import_module(name)\n"
      "ours = lambda: sorted(\n"
      "    f'{flags.FLAGS.find_module_defining_flag(n)}: {n}'\n"
      "    for n in set(flags.FLAGS) - before\n"
      "    if flags.FLAGS.find_module_defining_flag(n, '').split('.')[0]\n"
      "    in ('elmer_jax', 'tasks'))\n"
      "library = ours()\n"
      "importlib.import_module('elmer_jax.commands.train')\n"
      "print(json.dumps([library, ours()]))\n")
  result = subprocess.run([sys.executable, "-c", code, *_library()],
                          capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
  assert result.returncode == 0, result.stderr
  library, with_train = json.loads(result.stdout.strip().splitlines()[-1])
  assert library == []
  assert "elmer_jax.commands.train: coordinator_address" in with_train
