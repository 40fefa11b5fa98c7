"""Values, assertions and subprocess helpers shared by several test files
(test files import these, never each other)."""

import functools
import os
import signal
import subprocess
import sys

import flax
import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elmer_jax import gin_utils, objectives
from elmer_jax.model import Elmer
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.params import init_params

TINY = ElmerConfig(vocab_size=96, d_model=32, num_heads=4, d_ff=64,
                   encoder_layers=2, decoder_layers=4, max_positions=40,
                   mask_id=95)
SOFT = TINY.replace(soft_exit=True)
# The bundled SentencePiece model: <pad>=0 </s>=1 <unk>=2 <s>=3 <mask>=4.
SAMPLE = ElmerConfig(vocab_size=8000, pad_id=0, eos_id=1, unk_id=2, bos_id=3,
                     mask_id=4, d_model=32, num_heads=4)

# Text with the byte classes BPE must cover (accents, CJK, emoji, quotes).
BPE_EXTRA_TEXT = ["café naïve résumé", "日本語のテキスト", "emoji 🙂 here",
                  "It's, they're: (quoted) \"text\".", "Numbers 1234 and 3.14!"]

# Loads an exported directory in a fresh process as a user would and prints
# [class name, generated ids, exit layers] as JSON: argv = (dir, texts JSON).
TEXTS = ["Paris is the capital of France.", "  The river flows to the sea."]
LOAD_AND_GENERATE = """
import json, sys, torch, transformers
path, texts = sys.argv[1], json.loads(sys.argv[2])
model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
    path, trust_remote_code=True).eval()
tokenizer = transformers.AutoTokenizer.from_pretrained(path)
batch = tokenizer(texts, padding=True, return_tensors="pt")
out = model.generate(**batch, max_length=12, return_dict_in_generate=True)
print(json.dumps([type(model).__name__, out.sequences.tolist(),
                  out.exit_layers.tolist()]))
"""


def variants(first, *more) -> list:
  """Parametrize values for a parity check over settings: `first` runs in
  `make test` (the module's logic), `more` (further settings of the same
  check, each a compile of its own) in the integration tier. A tuple is one
  value per argument name."""
  param = lambda v, **kw: pytest.param(*(v if isinstance(v, tuple) else (v,)),
                                       **kw)
  return [param(first)] + [param(v, marks=pytest.mark.integration)
                           for v in more]


@functools.cache
def compiled_apply(config: ElmerConfig):
  """`Elmer(config).apply` compiled once per call pattern (op-by-op eager
  runs compile every op on its own); the Python-level switches are static.
  One per config, so the tests of a worker share what it compiled."""
  return jax.jit(Elmer(config).apply,
                 static_argnames=("return_all_layers", "gold_mix_rate"))


# Exit sampling compiled once per shape and method, as training runs it
# (eager calls compile every op on its own).
sample_exit_layers = jax.jit(objectives.sample_exit_layers,
                             static_argnums=(1, 2, 3))


def random_tokens(rng: np.random.Generator, config: ElmerConfig, batch: int,
                  length: int) -> np.ndarray:
  """Token ids that avoid the special ids 0..3."""
  return rng.integers(4, config.vocab_size, (batch, length)).astype(np.int32)


def _flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(str(k.key) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def assert_bitwise_equal(a, b) -> None:
  a, b = _flat(a), _flat(b)
  assert sorted(a) == sorted(b)
  for key in a:
    assert a[key].dtype == b[key].dtype, key
    assert a[key].shape == b[key].shape, key
    assert a[key].tobytes() == b[key].tobytes(), key


def checkpoint_params(model_dir, step: int) -> dict[str, np.ndarray]:
  """A run's saved parameters at `step`, flattened to 'a/b/c' names."""
  path = os.path.join(model_dir, "checkpoints", str(step), "default")
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(path)
  return flax.traverse_util.flatten_dict(state["params"], sep="/")


def sample_run(run_dir: str, step: int = 5) -> tuple[ElmerConfig, dict]:
  """A pretraining run's directory of the tiny sample model: config.gin and
  one checkpoint of perturbed initial parameters (no zero biases or unit
  scales to hide behind). Returns (config, params)."""
  gin_utils.parse(["experiments/demo_sample_tiny.gin"])
  config = gin_utils.macro("MODEL_CONFIG")
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.gin"), "w") as f:
    f.write(gin.config_str())
  params = init_params(config, jax.random.key(3))
  params = jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(jax.random.key(4), x.shape),
      params)
  with ocp.CheckpointManager(
      os.path.join(run_dir, "checkpoints"),
      item_handlers=ocp.StandardCheckpointHandler()) as manager:
    manager.save(step, args=ocp.args.StandardSave({"params": params}))
  return config, params


def third_party_noise(stderr: str) -> list[str]:
  """Lines a command's console should not show: TensorFlow's and XLA's INFO
  lines, the `cuInit` error of a machine without a GPU, orbax's notes on the
  read-only and item-level reads of a run's checkpoints."""
  return [line for line in stderr.splitlines()
          if line.startswith(("I0000", "I1", "E0000"))
          or any(note in line for note in (
              "cuInit", "read only", "read_only=True", "_CHECKPOINT_METADATA",
              "tracked_metric", "uncached FunctionDataset"))]


def subprocess_env(devices: int, **extra: str) -> dict[str, str]:
  """Our environment for a child process with `devices` CPU devices: the
  session's XLA flags (tests/conftest.py: cheap compiles, one thread per
  worker) are kept, the later device count wins."""
  flags = os.environ.get("XLA_FLAGS", "")
  return dict(os.environ, **extra, XLA_FLAGS=(
      f"{flags} --xla_force_host_platform_device_count={devices}").strip())


def run_python(*args, timeout: float = 600, cwd=None, **env
               ) -> subprocess.CompletedProcess:
  """`python ARGS` in a fresh process with `env` added to ours; one that
  runs over `timeout` fails the test with every thread's stack."""
  process = subprocess.Popen([sys.executable, *args], cwd=cwd,
                             env={**os.environ, "PYTHONFAULTHANDLER": "1",
                                  **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGABRT)  # faulthandler prints the stacks.
    _, stderr = process.communicate()
    pytest.fail(f"python {' '.join(args)[:2000]} ran over {timeout} s:\n"
                f"{stderr[-8000:]}")
  return subprocess.CompletedProcess(process.args, process.returncode,
                                     stdout, stderr)
