#!/usr/bin/env bash
# Starts one GPU host's processes of a training run. Run it on every host
# (from your scheduler, or `ssh HOST 'cd elmer_jax && launch/gpu_host.sh ...'`)
# with the same arguments and environment but its own HOST_INDEX:
#   NUM_HOSTS=2 HOST_INDEX=0 COORDINATOR=10.0.0.1:12355 launch/gpu_host.sh \
#     --gin_file=experiments/pretrain_c4_wiki_base.gin --model_dir=/shared/run
# The arguments (after an optional --) go to `python -m $MODULE` unchanged.
# Env: NUM_HOSTS (1), HOST_INDEX (0), COORDINATOR (host 0's host:port, needed
# with more than one process), PROCS_PER_HOST (1: one process owns the host's
# GPUs; gpu: one process per GPU, NUM_GPUS overriding `nvidia-smi -L`),
# MODULE (elmer_jax.train), PYTHON (python3), INSTALL=1 (pip install the cuda
# extra first), XLA_PYTHON_CLIENT_MEM_FRACTION (0.9), XLA_FLAGS (appended to
# ours), STOP_GRACE_S (10), DRY_RUN=1 (print the commands instead).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/_common.sh
if [[ "${1:-}" == "--" ]]; then
  shift
fi

python="${PYTHON:-python3}"
hosts="${NUM_HOSTS:-1}"
host="${HOST_INDEX:-0}"
need_int NUM_HOSTS "$hosts" 1
need_int HOST_INDEX "$host" 0
if ((host >= hosts)); then
  echo "$(basename "$0"): HOST_INDEX=$host is not below NUM_HOSTS=$hosts." >&2
  exit 2
fi
case "${PROCS_PER_HOST:-1}" in
  1) local_processes=1 ;;
  gpu) local_processes="${NUM_GPUS:-$(nvidia-smi -L | wc -l)}" ;;
  *)
    echo "$(basename "$0"): PROCS_PER_HOST=$PROCS_PER_HOST: expected 1 or gpu." >&2
    exit 2
    ;;
esac
need_int NUM_GPUS "$local_processes" 1
processes=$((hosts * local_processes))
if ((processes > 1)); then
  : "${COORDINATOR:?set COORDINATOR to host:port of host 0 (a free port) for $processes processes}"
fi

if [[ "${INSTALL:-0}" == 1 ]]; then
  run "$python" -m pip install -e '.[cuda]'
fi

# The latency-hiding scheduler overlaps collectives with compute.
xla_flags="--xla_gpu_enable_latency_hiding_scheduler=true${XLA_FLAGS:+ $XLA_FLAGS}"
common=(XLA_FLAGS="$xla_flags"
        XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}")
for ((rank = 0; rank < local_processes; rank++)); do
  process_id=$((host * local_processes + rank))
  process=()
  if ((processes > 1)); then
    process=(JAX_COORDINATOR_ADDRESS="$COORDINATOR"
             JAX_NUM_PROCESSES="$processes" JAX_PROCESS_ID="$process_id")
  fi
  if [[ "${PROCS_PER_HOST:-1}" == gpu ]]; then
    process+=(JAX_LOCAL_DEVICE_IDS="$rank")
  fi
  start_process "$process_id" env "${common[@]}" "${process[@]}" \
    "$python" -m "${MODULE:-elmer_jax.train}" "$@"
done
wait_processes
