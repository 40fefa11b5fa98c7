"""What the entry points print: timestamped lines of ours, little else.

Without `--verbose`, third-party INFO logging (absl's for orbax, gin and
jax) and the INFO logs of TensorFlow's and XLA's C++ code (oneDNN notes, a
`cuInit` error on a machine without a GPU) are off; warnings stay.
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


def setup(verbose: bool = False) -> None:
  """Quiets third-party logs unless `verbose`; call first in `main`, before
  anything imports TensorFlow."""
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
  else:
    os.environ.setdefault(_CPP_LOG_LEVEL, "1")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
  with contextlib.nullcontext() if verbose else _native_stderr_filtered():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_text  # pylint: disable=g-import-not-at-top,unused-import
    # TensorFlow only feeds data: the GPUs are JAX's (this also runs the
    # device probe, and its `cuInit` message, here).
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices were set up already.
      pass


def info(message: str) -> None:
  """One line on stdout, timestamped; flushed, so pipes and logs see it."""
  stamp = time.strftime("%H:%M:%S")
  for line in str(message).splitlines() or [""]:
    print(f"{stamp} {line}", file=sys.stdout, flush=True)
