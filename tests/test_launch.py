"""Launch scripts: the commands they would run, and real local processes."""

import os
import pathlib
import shlex
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
# Settings a developer's shell may hold that would change what is launched.
_SETTINGS = ("TPU", "ZONE", "PROJECT", "CREATE", "REPO_URL", "REPO_REF",
             "SETUP", "NUM_HOSTS", "HOST_INDEX", "COORDINATOR",
             "PROCS_PER_HOST", "NUM_GPUS", "INSTALL", "NUM_PROCESSES", "PORT",
             "PYTHON", "MODULE", "DRY_RUN", "XLA_FLAGS",
             "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_COORDINATOR_ADDRESS",
             "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")
# Quoting has to survive every hop: a word with spaces and quotes in it.
TRAIN_ARGS = ["--gin_file=experiments/pretrain_c4_wiki_base.gin",
              "--model_dir=gs://bucket/run", "--gin.X='a b'"]


def launch(script, *args, timeout=60, **settings):
  env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
  env.update(settings)
  return subprocess.run([str(LAUNCH / script), *args], env=env,
                        capture_output=True, text=True, timeout=timeout)


def dry_run(script, *args, **settings):
  result = launch(script, *args, DRY_RUN="1", **settings)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def option(words, name):
  """The value of `name=...` among a command's words."""
  values = [w.split("=", 1)[1] for w in words if w.startswith(name + "=")]
  assert len(values) == 1, (name, words)
  return values[0]


def env_of(words):
  """The `env NAME=VALUE ...` settings of a command, and the rest of it."""
  assert words[0] == "env", words
  settings = {}
  for i, word in enumerate(words[1:], 1):
    if "=" not in word or word.startswith("-"):
      return settings, words[i:]
    name, value = word.split("=", 1)
    settings[name] = value
  raise AssertionError(words)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return str(s.getsockname()[1])


@pytest.mark.parametrize("script", sorted(LAUNCH.glob("*.sh")),
                         ids=lambda p: p.name)
def test_scripts_parse(script):
  subprocess.run(["bash", "-n", str(script)], check=True)


def test_tpu_pod_installs_everywhere_and_passes_arguments_through():
  commands = dry_run("tpu_pod.sh", "--", *TRAIN_ARGS, TPU="pod",
                     ZONE="us-central2-b", PROJECT="proj", CREATE="1",
                     ACCELERATOR_TYPE="v4-64")
  create, archive, scp, *ssh = commands
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert option(create, "--accelerator-type") == "v4-64"
  assert archive[:2] == ["git", "archive"]
  assert scp[4] == "scp" and "--worker=all" in scp
  for words in ssh:
    assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert "--worker=all" in words
    assert option(words, "--zone") == "us-central2-b"
    assert option(words, "--project") == "proj"
  extract, install, train = [shlex.split(option(w, "--command")) for w in ssh]
  assert "tar" in extract
  assert install[install.index("pip"):] == ["pip", "install", "-q", "-e",
                                            ".[tpu]"]
  start = train.index("elmer_jax.train") + 1
  assert train[start:train.index("2>&1")] == TRAIN_ARGS
  assert train[-3:] == ["tee", "-a", "~/elmer_train.log"]


def test_tpu_pod_clones_a_repository_or_skips_setup():
  commands = dry_run("tpu_pod.sh", "--x=1", TPU="pod", ZONE="z",
                     REPO_URL="https://example.com/elmer.git")
  clone, install, train = [shlex.split(option(c, "--command"))
                           for c in commands]
  assert "https://example.com/elmer.git" in clone
  assert ".[tpu]" in install
  assert "--x=1" in train
  restart = dry_run("tpu_pod.sh", "--x=1", TPU="pod", ZONE="z", SETUP="0")
  assert len(restart) == 1 and "elmer_jax.train" in restart[0][-1]


@pytest.mark.parametrize("missing", ["TPU", "ZONE"])
def test_tpu_pod_names_a_missing_setting(missing):
  settings = {"TPU": "pod", "ZONE": "z", "DRY_RUN": "1"}
  del settings[missing]
  result = launch("tpu_pod.sh", **settings)
  assert result.returncode != 0
  assert missing in result.stderr
  assert not result.stdout


def test_gpu_host_one_process_per_gpu():
  commands = dry_run("gpu_host.sh", "--", *TRAIN_ARGS, NUM_HOSTS="2",
                     HOST_INDEX="1", PROCS_PER_HOST="gpu", NUM_GPUS="2",
                     COORDINATOR="10.0.0.1:1234", INSTALL="1",
                     XLA_FLAGS="--xla_dump_to=/tmp/dump")
  install, *processes = commands
  assert install[-2:] == ["-e", ".[cuda]"]
  assert len(processes) == 2
  for rank, words in enumerate(processes):
    settings, command = env_of(words)
    assert settings["JAX_PROCESS_ID"] == str(2 + rank)
    assert settings["JAX_LOCAL_DEVICE_IDS"] == str(rank)
    assert settings["JAX_NUM_PROCESSES"] == "4"
    assert settings["JAX_COORDINATOR_ADDRESS"] == "10.0.0.1:1234"
    assert settings["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"
    flags = settings["XLA_FLAGS"].split()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
    assert flags[-1] == "--xla_dump_to=/tmp/dump"
    assert command == ["python3", "-m", "elmer_jax.train", *TRAIN_ARGS]


def test_gpu_host_one_process_per_host():
  (words,) = dry_run("gpu_host.sh", *TRAIN_ARGS, NUM_HOSTS="3",
                     HOST_INDEX="2", COORDINATOR="h:1", PYTHON="py")
  settings, command = env_of(words)
  assert settings["JAX_PROCESS_ID"] == "2"
  assert settings["JAX_NUM_PROCESSES"] == "3"
  assert "JAX_LOCAL_DEVICE_IDS" not in settings
  assert command == ["py", "-m", "elmer_jax.train", *TRAIN_ARGS]
  (alone,) = dry_run("gpu_host.sh", "--x=1")
  assert "JAX_NUM_PROCESSES" not in env_of(alone)[0]


def test_gpu_host_needs_a_coordinator_for_several_processes():
  result = launch("gpu_host.sh", DRY_RUN="1", PROCS_PER_HOST="gpu",
                  NUM_GPUS="2")
  assert result.returncode != 0
  assert "COORDINATOR" in result.stderr
  result = launch("gpu_host.sh", DRY_RUN="1", NUM_HOSTS="2", HOST_INDEX="2",
                  COORDINATOR="h:1")
  assert result.returncode != 0
  assert "HOST_INDEX" in result.stderr


def test_local_single_process_keeps_its_usage():
  (words,) = dry_run("local.sh", "8", "bench/forward_backward.py", "--a=b c")
  settings, command = env_of(words)
  assert settings == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert command == [".venv/bin/python", "bench/forward_backward.py", "--a=b c"]


def test_local_processes_dry_run():
  commands = dry_run("local.sh", "4", "-m", "elmer_jax.train", *TRAIN_ARGS,
                     NUM_PROCESSES="3", PORT="23456")
  assert len(commands) == 3
  for index, words in enumerate(commands):
    settings, command = env_of(words)
    assert settings == {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_COORDINATOR_ADDRESS": "127.0.0.1:23456",
        "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": str(index)}
    assert command == [".venv/bin/python", "-m", "elmer_jax.train",
                       *TRAIN_ARGS]


@pytest.mark.integration
def test_local_processes_join_one_run():
  code = ("from elmer_jax import distributed; distributed.initialize(); "
          "import jax; "
          "print(jax.process_index(), jax.process_count(), jax.device_count())")
  result = launch("local.sh", "2", "-c", code, NUM_PROCESSES="2",
                  PORT=free_port())
  assert result.returncode == 0, result.stdout + result.stderr
  reports = sorted(line for line in result.stdout.splitlines()
                   if line.split()[1:2] in (["0"], ["1"]))
  assert reports == ["[p0] 0 2 4", "[p1] 1 2 4"], result.stdout


@pytest.mark.integration
def test_local_process_failure_stops_the_others():
  code = ("import os, sys, time\n"
          "if os.environ['JAX_PROCESS_ID'] == '1':\n"
          "  print('giving up', flush=True)\n"
          "  sys.exit(3)\n"
          "time.sleep(120)\n")
  start = time.monotonic()
  result = launch("local.sh", "1", "-c", code, NUM_PROCESSES="2",
                  PORT=free_port())
  assert time.monotonic() - start < 30
  assert result.returncode == 3
  assert "[p1] giving up" in result.stdout
  assert "process 1 exited with status 3" in result.stderr
