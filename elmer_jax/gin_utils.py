"""Gin at the entry points: parse files and bindings, read configured values.

Library code never imports gin; entry points call `parse` once and pass plain
values (such as `ElmerConfig`) down. Gin files use dynamic registration
(`from __gin__ import dynamic_registration`), so nothing needs decorating.
"""

import contextlib
import logging
import os
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


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
          search_paths: Sequence[str] = (),
          prelude: Sequence[str] = ()) -> None:
  """Parses `prelude` (gin lines, e.g. another run's model), gin files, then
  bindings; files are looked up in `search_paths`, the working directory and
  `gin_configs/`."""
  gin.clear_config()
  for path in (*search_paths, os.getcwd(), GIN_CONFIGS_DIR):
    gin.add_config_file_search_path(path)
  if prelude:
    gin.parse_config("\n".join(prelude))
  with _quiet_search_misses():
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                        finalize_config=False)


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
