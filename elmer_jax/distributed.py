"""Joining the multi-controller JAX runtime: one process per host (or GPU).

The trainer calls `initialize()` before touching a device, so a run starts
the same way everywhere:

- explicit: `--coordinator_address/--num_processes/--process_id` (flags of
  the train command, passed here as arguments), or the
  environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID` (GPU clusters, and CPU processes, which then use gloo
  collectives);
- automatic on Cloud TPU VMs and under SLURM / Open MPI (JAX's cluster
  detection);
- otherwise a single process.

A lost peer must not hang the others (a collective waiting on a dead peer
never returns): JAX's coordination service declares a process lost when it
misses heartbeats for `--heartbeat_timeout_s` and then ends every other
process with a message naming it ("The following tasks are unhealthy
(stopped sending heartbeats): 1"); losing process 0, the coordinator, ends
the others at once ("the leader task ... died"). Restart every process: the
run resumes from its last complete checkpoint.
"""

import glob
import importlib.util
import os
from typing import Optional

import jax
import numpy as np

from elmer_jax import console

# Set on Cloud TPU under GKE; TPU VMs reached by ssh are found by libtpu.
_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
            "CLOUD_TPU_TASK_ID")


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name}={value!r} is not an integer.") from None


def _cluster_detected() -> bool:
  """Cloud TPU (JAX finds the slice's workers from the VM metadata), SLURM
  or Open MPI with several tasks."""
  tpu_chips = glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*")
  on_tpu_vm = (any(os.environ.get(name) for name in _TPU_ENV)
               or (bool(tpu_chips)
                   and importlib.util.find_spec("libtpu") is not None))
  slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
  mpi = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
  return on_tpu_vm or slurm or mpi


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               heartbeat_timeout_s: int = 100) -> None:
  """Joins the run's processes (if there are several) and logs this one.

  Arguments (the train command's flags) override the environment variables.
  `heartbeat_timeout_s`: a peer silent this long is declared lost.
  """
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  count = num_processes or _env_int("JAX_NUM_PROCESSES")
  index = process_id
  if index is None:
    index = _env_int("JAX_PROCESS_ID")
  if address:
    if count is None or index is None:
      raise ValueError(
          f"Coordinator {address} given but the process count/index is not "
          f"(num_processes={count}, process_id={index}): pass "
          "--num_processes and --process_id, or set $JAX_NUM_PROCESSES and "
          "$JAX_PROCESS_ID.")
    if not 0 <= index < count:
      raise ValueError(f"process_id={index} is outside [0, {count}).")
    if count > 1:
      # CPU devices need it for cross-process collectives; GPUs and TPUs
      # have their own.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(address, count, index,
                                 heartbeat_timeout_seconds=heartbeat_timeout_s)
  elif count not in (None, 1):
    raise ValueError(f"num_processes={count} needs a coordinator address "
                     "(--coordinator_address or $JAX_COORDINATOR_ADDRESS).")
  elif _cluster_detected():
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
  console.info(f"process {jax.process_index()}/{jax.process_count()}: "
               f"{jax.local_device_count()} local devices "
               f"{[str(d) for d in jax.local_devices()]}, "
               f"{jax.device_count()} in all")


def min_over_processes(value: int) -> int:
  """The smallest of every process's `value` (all processes must call)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return int(np.min(multihost_utils.process_allgather(np.int32(value))))


def barrier(name: str) -> None:
  """Waits until every process gets here."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def shutdown() -> None:
  """Leaves the run once every process is done (JAX's shutdown barrier)."""
  if jax.process_count() > 1:
    jax.distributed.shutdown()
