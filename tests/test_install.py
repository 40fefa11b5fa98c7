"""Reproducible installs: requirements.lock pins what requirements.txt asks
for, the accelerator extras use the locked jax, and the venv `make` built
holds exactly the lock; tools/lock.py names what is wrong."""

import importlib.metadata
import pathlib
import re
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from tools import lock

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def _requirements():
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  return [Requirement(line) for line in lines
          if line.strip() and not line.startswith("#")]


def test_lock_satisfies_every_requirement_exactly():
  python, pins = lock.read(str(LOCK))
  assert re.fullmatch(r"\d+\.\d+", python)
  for requirement in _requirements():
    key = lock.canonical(requirement.name)
    assert key in pins, f"{requirement.name} is not in requirements.lock"
    version = pins[key][1]
    assert requirement.specifier.contains(version, prereleases=True), (
        requirement, version)
  # The CPU wheel: an unpinned torch would pull CUDA libraries.
  assert pins["torch"][1].endswith("+cpu")
  assert not any(key.startswith("nvidia-") for key in pins)


def test_accelerator_extras_pin_the_locked_jax():
  _, pins = lock.read(str(LOCK))
  extras = tomllib.loads((ROOT / "pyproject.toml").read_text())[
      "project"]["optional-dependencies"]
  for extra, flavour in (("tpu", "tpu"), ("cuda", "cuda12")):
    (requirement,) = map(Requirement, extras[extra])
    assert requirement.name == "jax" and requirement.extras == {flavour}
    assert str(requirement.specifier) == f"=={pins['jax'][1]}", extra


@pytest.mark.skipif(
    pathlib.Path(sys.prefix).resolve() != (ROOT / ".venv").resolve()
    or not (ROOT / ".venv" / ".installed").exists(),
    reason="checks the venv `make` installs (.venv of this checkout)")
def test_the_make_venv_holds_exactly_the_lock():
  assert lock.python_problem(str(LOCK)) is None
  assert lock.differences(str(LOCK)) == []


def _lock_of_this_environment(tmp_path):
  path = tmp_path / "requirements.lock"
  lock.write(str(path))
  return path


def test_written_lock_reads_back_and_matches_this_environment(tmp_path):
  path = _lock_of_this_environment(tmp_path)
  python, pins = lock.read(str(path))
  assert python == "%d.%d" % sys.version_info[:2]
  assert "pip" not in pins and "elmer-jax" not in pins
  assert pins["pytest"][1] == importlib.metadata.version("pytest")
  assert lock.differences(str(path)) == []


def test_a_changed_missing_or_extra_package_is_named(tmp_path):
  path = _lock_of_this_environment(tmp_path)
  lines = path.read_text().splitlines()
  lines = [re.sub(r"^pytest==.*", "pytest==0.0.1", line) for line in lines]
  lines = [line for line in lines if not line.startswith("pluggy==")]
  lines.append("not-a-real-package==1.0")
  path.write_text("\n".join(lines) + "\n")
  assert lock.differences(str(path)) == [
      "not-a-real-package==1.0 is locked but not installed",
      f"pluggy=={importlib.metadata.version('pluggy')} is installed but not "
      "in the lock",
      f"pytest is {importlib.metadata.version('pytest')}, the lock says 0.0.1"]


def test_another_python_is_named_with_the_fix(tmp_path):
  path = _lock_of_this_environment(tmp_path)
  path.write_text(re.sub(r"# python \d+\.\d+", "# python 3.99",
                         path.read_text()))
  problem = lock.python_problem(str(path))
  assert "made for Python 3.99 but" in problem
  assert "PYTHON=python3.99" in problem


@pytest.mark.parametrize("text,message", [
    ("# python 3.11\ntorch>=2\n", r"requirements.lock:2: 'torch>=2' is not "
     "NAME==VERSION"),
    ("jax==0.10.2\n", r"has no '# python X.Y' line"),
])
def test_a_malformed_lock_is_named(tmp_path, text, message):
  path = tmp_path / "requirements.lock"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    lock.read(str(path))
