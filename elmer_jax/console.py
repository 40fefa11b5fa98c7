"""What the entry points print: timestamped lines of ours, little else.

Without `--verbose`, third-party INFO logging (absl's for orbax, gin and
jax) and the INFO logs of TensorFlow's and XLA's C++ code (oneDNN notes, a
`cuInit` error on a machine without a GPU) are off; warnings stay, but for
a few that describe what we do on purpose (`_BENIGN_WARNINGS`).
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from typing import Iterator

from absl import logging as absl_logging

# Read by TensorFlow and XLA when their C++ logging starts: 1 drops INFO,
# keeps warnings and errors.
_CPP_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# What TensorFlow's native libraries write to stderr while they load, before
# absl logging is initialised (so regardless of TF_CPP_MIN_LOG_LEVEL): INFO
# lines, absl's note about that, and the failed `cuInit` of a machine
# without a GPU (TensorFlow only feeds data here; JAX owns the devices).
_LOAD_NOISE = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog|"
    r"E\d{4} .*(cuInit|cuda_platform|Unable to register cu))")

# Third-party warnings about what we do on purpose: orbax on a run's
# checkpoints opened read-only (generate, evaluate, export), on reading a
# step's `default` item directly (the step's metadata file is one level up)
# and on interval saves between evaluations (they carry no eval loss; the
# best steps are chosen among those that do); seqio on training from files
# without its cache (our iterator states make the order exact on resume).
_BENIGN_WARNINGS = re.compile(
    r"^(Given directory is read only|Metadata file does not exist: .*/"
    r"default/_CHECKPOINT_METADATA$|Requested `tracked_metric`; did not "
    r"provide metrics|Using an uncached FunctionDataset for training)")


class _DropBenign(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not _BENIGN_WARNINGS.search(record.getMessage())


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
  """Runs the body with file descriptor 2 captured, then passes on every
  captured line but the known load-time noise."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode("utf-8", "replace").splitlines():
        if not _LOAD_NOISE.search(line):
          print(line, file=sys.stderr)


def _tensorflow_without_gpus() -> None:
  """TensorFlow only feeds data: the GPUs are JAX's. This also runs
  TensorFlow's device probe (and its `cuInit` message) now, not when
  absl's flag parsing would."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TensorFlow's devices were set up already.
    pass


@contextlib.contextmanager
def quiet_native_load() -> Iterator[None]:
  """Around a command module's top-level imports that load TensorFlow: its
  C++ INFO logs off and its load-time lines dropped, as `setup` does (which
  comes too late for them)."""
  os.environ.setdefault(_CPP_LOG_LEVEL, "1")
  with _native_stderr_filtered():
    yield
    if "tensorflow" in sys.modules:
      _tensorflow_without_gpus()


def setup(verbose: bool = False) -> None:
  """Quiets third-party logs unless `verbose`; call first in `main`, before
  anything imports TensorFlow."""
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
  else:
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    if not any(isinstance(f, _DropBenign) for f in
               absl_logging.get_absl_logger().filters):
      absl_logging.get_absl_logger().addFilter(_DropBenign())
  with contextlib.nullcontext() if verbose else quiet_native_load():
    import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import
  if verbose:  # quiet_native_load hides TensorFlow's GPUs on its way out.
    _tensorflow_without_gpus()


def info(message: str) -> None:
  """One line on stdout, timestamped; flushed, so pipes and logs see it."""
  stamp = time.strftime("%H:%M:%S")
  for line in str(message).splitlines() or [""]:
    print(f"{stamp} {line}", file=sys.stdout, flush=True)
