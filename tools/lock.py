"""requirements.lock: write it from an environment, or check one against it.

`make lock` writes the lock from a fresh venv that installed requirements.txt;
`make` installs exactly the lock (pip --no-deps) and then checks the venv
against it, so a new release upstream cannot change what `make test` runs.
Standard library only: it runs before anything else is installed.

  python tools/lock.py write requirements.lock   # from this environment
  python tools/lock.py python requirements.lock  # is this the lock's Python?
  python tools/lock.py check requirements.lock   # installed == locked?
"""

import importlib.metadata
import platform
import re
import sys

# The installer itself and our own (editable) package are not locked.
UNLOCKED = frozenset({"pip", "elmer-jax"})
_PYTHON = re.compile(r"^# python (\d+\.\d+)$")


def canonical(name: str) -> str:
  """A distribution name as pip compares them (PEP 503)."""
  return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, tuple[str, str]]:
  """canonical name -> (name, version) of this environment's distributions."""
  found = {}
  for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name and canonical(name) not in UNLOCKED:
      found[canonical(name)] = (name, dist.version)
  return found


def read(path: str) -> tuple[str, dict[str, tuple[str, str]]]:
  """(Python major.minor, canonical name -> (name, version)) of a lock."""
  python, pins = None, {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if match := _PYTHON.match(line):
        python = match.group(1)
      if not line or line.startswith("#"):
        continue
      name, sep, version = line.partition("==")
      if not sep or not version or " " in line:
        raise ValueError(f"{path}:{number}: {line!r} is not NAME==VERSION")
      pins[canonical(name)] = (name, version)
  if python is None:
    raise ValueError(f"{path} has no '# python X.Y' line naming the Python "
                     "it was made with; regenerate it with `make lock`")
  return python, pins


def write(path: str) -> None:
  python = "%d.%d" % sys.version_info[:2]
  lines = [
      "# Exact versions of everything `make` installs (pip --no-deps), made by",
      "# `make lock` from requirements.txt in a fresh venv: do not edit, rerun",
      f"# it. Made on {platform.system()} {platform.machine()} with:",
      f"# python {python}",
  ]
  lines += [f"{name}=={version}"
            for _, (name, version) in sorted(installed().items())]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def python_problem(path: str) -> str | None:
  """Why this Python cannot install the lock, or None."""
  locked, _ = read(path)
  running = "%d.%d" % sys.version_info[:2]
  if running == locked:
    return None
  return (f"{path} was made for Python {locked} but {sys.executable} is "
          f"Python {running}: run `make clean` and then make with "
          f"PYTHON=python{locked}, or `make lock` to lock for Python "
          f"{running}")


def differences(path: str) -> list[str]:
  """How this environment differs from the lock (empty when it matches)."""
  _, pins = read(path)
  have = installed()
  problems = []
  for key in sorted(pins.keys() | have.keys()):
    if key not in have:
      problems.append(f"{pins[key][0]}=={pins[key][1]} is locked but not "
                      "installed")
    elif key not in pins:
      problems.append(f"{have[key][0]}=={have[key][1]} is installed but not "
                      "in the lock")
    elif have[key][1] != pins[key][1]:
      problems.append(f"{have[key][0]} is {have[key][1]}, the lock says "
                      f"{pins[key][1]}")
  return problems


def main(argv: list[str]) -> int:
  if len(argv) != 3 or argv[1] not in ("write", "python", "check"):
    print(__doc__, file=sys.stderr)
    return 2
  command, path = argv[1], argv[2]
  if command == "write":
    write(path)
    return 0
  if command == "python":
    problem = python_problem(path)
    if problem:
      print(problem, file=sys.stderr)
    return 1 if problem else 0
  problems = differences(path)
  for problem in problems:
    print(f"{sys.prefix}: {problem}", file=sys.stderr)
  if problems:
    print(f"The environment differs from {path}: `make clean` and rerun make "
          "(or `make lock` if requirements.txt changed).", file=sys.stderr)
    return 1
  print(f"{sys.prefix} matches {path} ({len(installed())} packages)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
