"""Test session settings (8 fake CPU devices, a thread per worker, offline HF,
fp32 matmuls, one compilation cache) and shared fixtures; plain helpers live
in helpers.py."""

import os

# `make test` runs one xdist worker per core. Left alone, each worker's
# XLA, TensorFlow and torch would each start a thread per core, and on 2
# cores the tier ran 2x slower (385 s against 184 s wall, cold cache): one
# thread per worker's pool when the workers fill the cores. (Not TF's
# inter-op pool: with one thread, tf.data's blocking ops deadlock.)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, len(os.sched_getaffinity(0)) // _WORKERS)
for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
  os.environ.setdefault(_name, str(_THREADS))
# Tests compile hundreds of small programs: XLA's CPU backend without its
# costly LLVM passes compiles them about twice as fast, and computes the same
# IEEE results (no fast-math either way). Benchmarks do not set this.
os.environ.setdefault("XLA_FLAGS", " ".join([
    "--xla_force_host_platform_device_count=8",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true"]
    + ["--xla_cpu_multi_thread_eigen=false"] * (_THREADS == 1)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One compilation cache per checkout, kept between runs and shared by the
# xdist workers and every CLI subprocess (they inherit this environment): a
# program any of them compiled is read back, not compiled again. Its keys
# hold the program, the flags and the versions, so a change recompiles only
# what it changed. LRU-capped, file-locked between processes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

import json

import jax
import pytest

# Parity is about semantics, checked in true fp32: on GPUs JAX's default f32
# matmul uses TF32 (about 1e-3 off). A no-op on CPU.
jax.config.update("jax_default_matmul_precision", "highest")


# What the fixtures need is imported inside them: pytest-xdist's controller
# process loads this file too, and importing TensorFlow and seqio there (~7
# s) would delay every worker's start.


@pytest.fixture
def tiny_config():
  from tests.helpers import TINY  # pylint: disable=import-outside-toplevel
  return TINY


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory):
  """A small BART-style vocab.json + merges.txt trained on the sample."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  from tasks import pretraining  # pylint: disable=import-outside-toplevel
  from tests.helpers import BPE_EXTRA_TEXT  # pylint: disable=import-outside-toplevel
  with open(pretraining.SAMPLE_JSONL) as f:
    lines = [json.loads(line)["text"] for line in f][:20]
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
      add_prefix_space=False)
  tokenizer.train_from_iterator(lines + BPE_EXTRA_TEXT, trainer)
  tokenizer.add_special_tokens(["<mask>"])
  path = tmp_path_factory.mktemp("bpe")
  tokenizer.model.save(str(path))
  vocab = json.loads((path / "vocab.json").read_text())
  vocab["<mask>"] = len(vocab)  # BART keeps <mask> as the last id.
  (path / "vocab.json").write_text(json.dumps(vocab))
  return path


