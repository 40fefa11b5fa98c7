"""Pretrain ELMER: `python -m elmer_jax.train --gin_file=... --model_dir=DIR`.

Gin files come from `gin_configs/` (or --gin_search_paths); `--gin.NAME=VALUE`
adds a binding. The run directory gets the parsed `config.gin`, and a copy
of the vocabulary `--gin.VOCABULARY="'path'"` names (see run_config.py). Multi-host:
the same command on every host, see `elmer_jax/distributed.py` for how the
processes find each other (--coordinator_address, --num_processes,
--process_id, else $JAX_COORDINATOR_ADDRESS, ..., or automatically on Cloud
TPU).
"""

import os
import sys

from absl import app, flags
import gin
import jax

from elmer_jax import console, distributed, gin_utils

_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files, in order.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [],
                                          "Gin bindings (also --gin.X=Y).")
_SEARCH = flags.DEFINE_list("gin_search_paths", [], "Where gin files live.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run directory.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also print the INFO logs of "
                             "TensorFlow, XLA, orbax, gin and jax.")
_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator (else $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (else $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (else $JAX_PROCESS_ID).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100,
    "A peer silent this long is declared lost and the run stops.")
# Macros read by code (here and in elmer_jax/run_config.py), not by gin bindings.
_READ_MACROS = ("MODEL_CONFIG", "TRAIN_CONFIG", "VOCABULARY", "ENCODER_BOS",
                "INIT_CHECKPOINT")


def main(argv):
  del argv
  if not _MODEL_DIR.value:
    raise app.UsageError("--model_dir is required: the run directory for "
                         "checkpoints, config.gin and metrics.")
  console.setup(_VERBOSE.value)  # Before TensorFlow is first imported.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmer_jax import run_config  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top  (registers the tasks)
  run_config.parse_for_training(_GIN_FILES.value, _GIN_BINDINGS.value,
                                _SEARCH.value,
                                use_vocabulary=tasks.use_vocabulary)
  gin_utils.check_bound_macros(_GIN_BINDINGS.value, _READ_MACROS)
  model_config = gin_utils.macro("MODEL_CONFIG")
  train_config = gin_utils.macro("TRAIN_CONFIG")
  distributed.initialize(_ADDRESS.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, _HEARTBEAT.value)
  chief = jax.process_index() == 0  # Writes the files of the whole run.
  if chief:
    _hint_huge_pages()
    tf.io.gfile.makedirs(_MODEL_DIR.value)
    run_config.keep_vocabulary_with_run(_MODEL_DIR.value)
    run_config.write_run_config(_MODEL_DIR.value, gin.config_str())
  from elmer_jax.training import loop
  loop.train(model_config, train_config, _MODEL_DIR.value)
  distributed.shutdown()
  if chief:
    console.info(
        f"Checkpoints: {os.path.join(_MODEL_DIR.value, 'checkpoints')}\n"
        f"TensorBoard: {os.path.join(_MODEL_DIR.value, 'tensorboard')}\n"
        f"Metrics:     {os.path.join(_MODEL_DIR.value, 'metrics.jsonl')}")


_HUGE_PAGES = "glibc.malloc.hugetlb=1"


def _hint_huge_pages() -> None:
  """XLA:CPU maps each step's scratch memory afresh, and in 4 KiB pages an
  ELMER-base step faults ~390,000 of them; huge pages can only be asked for
  before Python starts (README: CPU hosts)."""
  if (jax.default_backend() == "cpu" and sys.platform == "linux"
      and _HUGE_PAGES not in os.environ.get("GLIBC_TUNABLES", "")):
    console.info(f"CPU: start with GLIBC_TUNABLES={_HUGE_PAGES} for faster "
                 "steps (huge pages for XLA's scratch memory; README, CPU "
                 "hosts)")


def run() -> None:
  app.run(main, argv=gin_utils.rewrite_gin_flags(sys.argv))


if __name__ == "__main__":
  run()
