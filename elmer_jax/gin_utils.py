"""Gin at the entry points: parse files and bindings, read configured values.

Library code never imports gin; entry points call `parse` once and pass plain
values (such as `ElmerConfig`) down. Gin files use dynamic registration
(`from __gin__ import dynamic_registration`), so nothing needs decorating.
"""

import contextlib
import difflib
import logging
import os
import re
from typing import Any, Iterator, Sequence

import gin

# `gin_configs/` beside the package, so `--gin_file=models/base.gin` works
# from any directory.
GIN_CONFIGS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs")


@contextlib.contextmanager
def _quiet_search_misses() -> Iterator[None]:
  """Gin logs an ERROR for every search path that lacks a file, even when a
  later path has it; those misses are not errors for us."""
  quiet = lambda record: not record.getMessage().startswith("Path not found")
  logger = logging.getLogger()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def _find(path: str, prefixes: Sequence[str]) -> str:
  """`path` under the first prefix that has it; raises naming all of them."""
  for prefix in prefixes:
    candidate = os.path.join(prefix, path)
    if tf_exists(candidate):
      return candidate if "://" in candidate else os.path.abspath(candidate)
  raise FileNotFoundError(
      f"Gin file {path!r} is in none of: {', '.join(p or '.' for p in prefixes)}"
      " (--gin_search_paths adds folders).")


def tf_exists(path: str) -> bool:
  if "://" in path:
    import tensorflow as tf  # Only for gs:// and other remote paths.
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
          search_paths: Sequence[str] = (),
          prelude: Sequence[str] = ()) -> None:
  """Parses `prelude` (gin lines, e.g. another run's model), gin files, then
  bindings. Files and their includes are looked up in `search_paths`, then
  `gin_configs/`, then the working directory: a folder there named like a
  `gin_configs/` one (`data/`, `runs/`) changes nothing."""
  gin.clear_config()
  # Gin tries its prefixes in order, the working directory ('') first, and
  # there asks Python for a package named like the include's folder, which
  # fails on a plain folder of that name. Its prefix list has no public
  # setter, and `add_config_file_search_path` only appends.
  prefixes = [*search_paths, GIN_CONFIGS_DIR, ""]
  gin.config._LOCATION_PREFIXES[:] = prefixes  # pylint: disable=protected-access
  files = [path if os.path.isabs(path) or "://" in path
           else _find(path, prefixes) for path in gin_files]
  if prelude:
    gin.parse_config("\n".join(prelude))
  with _quiet_search_misses():
    gin.parse_config_files_and_bindings(files, list(gin_bindings),
                                        finalize_config=False)


def _macro_references(value: Any) -> Iterator[str]:
  """Names of the macros (`%NAME`) inside a bound value."""
  if isinstance(value, gin.config.ConfigurableReference):
    if value.configurable.selector == "gin.macro":
      yield value.scoped_selector.rsplit("/", 1)[0]
  elif isinstance(value, (list, tuple, set)):
    for item in value:
      yield from _macro_references(item)
  elif isinstance(value, dict):
    for item in value.values():
      yield from _macro_references(item)


def check_bound_macros(gin_bindings: Sequence[str],
                       read_by_code: Sequence[str] = ()) -> None:
  """Raises for a `NAME=value` binding of a macro that nothing reads (a
  misspelling such as TRAIN_FILS), naming the nearest macro that is read:
  gin itself would accept it and change nothing."""
  config = gin.config._CONFIG  # pylint: disable=protected-access
  read = set(read_by_code)
  for parameters in config.values():
    for value in parameters.values():
      read.update(_macro_references(value))
  for binding in gin_bindings:
    name = binding.split("=", 1)[0].strip()
    if not re.fullmatch(r"[A-Za-z_]\w*", name) or name in read:
      continue
    nearest = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.5)
    hint = (f"did you mean {nearest[0]}?" if nearest else
            f"macros read: {', '.join(sorted(read))}.")
    raise ValueError(f"Gin macro {name} (from the binding {binding!r}) is read "
                     f"by no config, so it would change nothing: {hint}")


def macro(name: str) -> Any:
  """The value of gin macro `name` (an `@configurable()` is called)."""
  value = gin.query_parameter(f"%{name}")
  if isinstance(value, gin.config.ConfigurableReference):
    if not value.evaluate:
      raise ValueError(f"gin macro {name} = {value} is a reference; bind it "
                       f"to an evaluated one: {value}().")
    return value.scoped_configurable_fn()
  return value


def rewrite_gin_flags(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` (t5x style) → `--gin_bindings=NAME=VALUE`."""
  return [f"--gin_bindings={a[len('--gin.'):]}" if a.startswith("--gin.")
          else a for a in argv]
