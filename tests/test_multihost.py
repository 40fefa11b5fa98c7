"""Two real processes on 127.0.0.1 (4 CPU devices each, gloo collectives)
train as one run: the same losses as one process with 8 devices, a
checkpoint written by both, SIGKILL and restart, a lost peer."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import subprocess_env

HEARTBEAT_S = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
BINDINGS = [
    f"--gin.loop.TrainConfig.steps={STEPS}",
    "--gin.loop.TrainConfig.batch_size=8",
    "--gin.loop.TrainConfig.encoder_length=24",
    "--gin.loop.TrainConfig.decoder_length=24",
    "--gin.loop.TrainConfig.log_every=1",
    "--gin.loop.TrainConfig.checkpoint_every=4",
    "--gin.loop.TrainConfig.keep_checkpoints=5",
    # Two input shards whoever reads them: the 1-process run sees the same
    # global batches as the 2-process one.
    "--gin.loop.TrainConfig.data_shards=2",
]
MESH = ["--gin.partitioning.MeshConfig.ici=(4, 1, 2)"]  # data=4, tensor=2.
# Processes as the slices of a hybrid mesh: data=2 across, data=2 x tensor=2
# within each.
HYBRID_MESH = ["--gin.partitioning.MeshConfig.ici=(2, 1, 2)",
               "--gin.partitioning.MeshConfig.dcn=(2, 1, 1)"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(model_dir, devices, process_id=None, port=None, log=None,
           steps=STEPS, mesh=tuple(MESH)):
  env = subprocess_env(
      devices, JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".pytest_cache",
                                                      "multihost_xla"),
      TF_CPP_MIN_LOG_LEVEL="2")
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id))
  command = [sys.executable, "-m", "elmer_jax.train",
             "--gin_file=experiments/demo_sample_tiny.gin",
             f"--model_dir={model_dir}", *BINDINGS, *mesh,
             f"--gin.loop.TrainConfig.steps={steps}",
             f"--heartbeat_timeout_s={HEARTBEAT_S}"]
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT, text=True)


def _two_processes(model_dir, tmp_path, name, steps=STEPS, mesh=tuple(MESH)):
  port = _free_port()
  logs = [open(tmp_path / f"{name}_{i}.log", "w") for i in range(2)]
  return [_start(model_dir, 4, i, port, logs[i], steps, mesh)
          for i in range(2)]


def _wait(processes, tmp_path, name, timeout=420):
  for i, process in enumerate(processes):
    rc = process.wait(timeout=timeout)
    assert rc == 0, (tmp_path / f"{name}_{i}.log").read_text()[-3000:]


def _losses(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return {m["step"]: m["loss"] for m in map(json.loads, f)}


def _complete_steps(model_dir):
  directory = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """An uninterrupted two-process run (the reference of the tests below)."""
  tmp_path = tmp_path_factory.mktemp("two")
  _wait(_two_processes(tmp_path / "run", tmp_path, "run"), tmp_path, "run")
  return tmp_path


def _assert_same_losses(two_process_dir, tmp_path, mesh=tuple(MESH)):
  with open(tmp_path / "one.log", "w") as log:
    one = _start(tmp_path / "one", 8, log=log, mesh=mesh)
    assert one.wait(timeout=420) == 0, (tmp_path / "one.log").read_text()
  two, single = _losses(two_process_dir), _losses(tmp_path / "one")
  assert sorted(two) == list(range(1, STEPS + 1))
  for step in two:
    # A different reduction order across processes: a few float32 ulps of
    # the summed loss (1 ulp at 8 is 9.5e-7; 1.3e-6 was measured).
    assert two[step] == pytest.approx(single[step], rel=5e-7), step
  assert two[STEPS] < two[1]


@pytest.mark.integration
def test_two_processes_match_one_process_and_both_write_the_checkpoint(
    two_process_run, tmp_path):
  run = two_process_run / "run"
  _assert_same_losses(run, tmp_path)

  logs = [(two_process_run / f"run_{i}.log").read_text() for i in range(2)]
  assert "process 0/2: 4 local devices" in logs[0]
  assert "process 1/2: 4 local devices" in logs[1]
  step_dir = run / "checkpoints" / str(STEPS) / "default"
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(step_dir))
  data = set(os.listdir(run / "data" / str(STEPS)))
  assert any(n.startswith("shard_0") for n in data)
  assert any(n.startswith("shard_1") for n in data)
  with open(run / "metrics.jsonl") as f:  # Process 0 alone writes it.
    assert len(f.readlines()) == STEPS


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_as_slices_of_a_hybrid_mesh_match_one_process(tmp_path):
  _wait(_two_processes(tmp_path / "two", tmp_path, "two", mesh=HYBRID_MESH),
        tmp_path, "two")
  _assert_same_losses(tmp_path / "two", tmp_path, mesh=HYBRID_MESH)


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_both_then_restart_resumes_and_matches(two_process_run,
                                                        tmp_path):
  run = tmp_path / "run"
  processes = _two_processes(run, tmp_path, "killed", steps=10 ** 6)
  deadline = time.time() + 420
  while 8 not in _complete_steps(run) and time.time() < deadline:
    time.sleep(0.2)
  for process in processes:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert 8 in _complete_steps(run), "no checkpoint before the deadline"
  killed_at = max(_complete_steps(run))

  restarted = _two_processes(run, tmp_path, "restarted")
  _wait(restarted, tmp_path, "restarted")
  log = (tmp_path / "restarted_0.log").read_text()
  assert f"Resumed from step {killed_at}" in log
  expected = _losses(two_process_run / "run")[STEPS]
  assert _losses(run)[STEPS] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(
    two_process_run, tmp_path):
  run = tmp_path / "run"
  processes = _two_processes(run, tmp_path, "preempted", steps=10 ** 6)
  deadline = time.time() + 420
  while not _complete_steps(run) and time.time() < deadline:
    time.sleep(0.2)
  processes[1].send_signal(signal.SIGTERM)  # The notice reaches one host.
  _wait(processes, tmp_path, "preempted")
  saved = [re.findall(r"SIGTERM: saved step (\d+)",
                      (tmp_path / f"preempted_{i}.log").read_text())
           for i in range(2)]
  assert saved[0] and saved[0] == saved[1], saved
  assert int(saved[0][0]) < STEPS
  assert int(saved[0][0]) in _complete_steps(run)

  _wait(_two_processes(run, tmp_path, "restarted"), tmp_path, "restarted")
  expected = _losses(two_process_run / "run")[STEPS]
  assert _losses(run)[STEPS] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow  # Over a minute: two processes, then the heartbeat timeout.
@pytest.mark.integration
@pytest.mark.parametrize("lost", [
    pytest.param(1, id="worker"),
    pytest.param(0, id="coordinator", marks=pytest.mark.slow)])
def test_a_lost_peer_stops_the_other_process_naming_it(tmp_path, lost):
  processes = _two_processes(tmp_path / "run", tmp_path, "lost",
                             steps=10 ** 6)
  deadline = time.time() + 420
  while not _complete_steps(tmp_path / "run") and time.time() < deadline:
    time.sleep(0.2)
  processes[lost].send_signal(signal.SIGKILL)
  killed = time.time()
  survivor = processes[1 - lost]
  try:
    rc = survivor.wait(timeout=HEARTBEAT_S + 40)
  except subprocess.TimeoutExpired:
    survivor.kill()
    pytest.fail(f"the survivor still runs {HEARTBEAT_S + 40} s after its "
                "peer was killed")
  print(f"survivor stopped {time.time() - killed:.1f} s after the kill")
  assert rc != 0
  log = (tmp_path / f"lost_{1 - lost}.log").read_text()
  names_the_peer = (r"tasks are unhealthy \(stopped sending heartbeats\):"
                    r"\s*1\s" if lost else r"the leader task was .*died")
  assert re.search(names_the_peer, log), log[-3000:]


@pytest.mark.parametrize("env, error", [
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"},
     "process count/index is not"),
    ({"JAX_NUM_PROCESSES": "2"}, "needs a coordinator address"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": "2"}, r"process_id=2 is outside \[0, 2\)"),
    ({"JAX_NUM_PROCESSES": "two"}, r"\$JAX_NUM_PROCESSES='two' is not an"),
])
def test_a_wrong_process_setup_is_named_before_joining(monkeypatch, env,
                                                       error):
  from elmer_jax import distributed
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=error):
    distributed.initialize()
