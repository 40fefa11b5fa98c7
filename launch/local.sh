#!/usr/bin/env bash
# Runs an elmer_jax command on this machine's CPU with N fake devices, the way
# sharding tests and small experiments do:  launch/local.sh 8 bench/forward_backward.py
# NUM_PROCESSES=P runs P such processes joined over 127.0.0.1:$PORT, as the
# hosts of a multi-host run (output lines prefixed [pI]; one failing stops all):
#   NUM_PROCESSES=2 launch/local.sh 4 -m elmer_jax.train --gin_file=... --model_dir=/tmp/run
# PYTHON overrides .venv/bin/python; DRY_RUN=1 prints the commands instead.
set -euo pipefail
devices="${1:?usage: [NUM_PROCESSES=P] launch/local.sh NUM_DEVICES SCRIPT_OR_-m [ARGS...]}"
shift
cd "$(dirname "$0")/.."
source launch/_common.sh

python="${PYTHON:-.venv/bin/python}"
# Last, so that it wins over a device count already in $XLA_FLAGS.
xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=${devices}"
processes="${NUM_PROCESSES:-1}"
need_int NUM_DEVICES "$devices" 1
need_int NUM_PROCESSES "$processes" 1

if ((processes == 1)); then
  if dry_run; then
    print_command env XLA_FLAGS="$xla_flags" "$python" "$@"
    exit
  fi
  export XLA_FLAGS="$xla_flags"
  exec "$python" "$@"
fi

port="${PORT:-$((12355 + RANDOM % 1000))}"
for ((i = 0; i < processes; i++)); do
  start_process "$i" env XLA_FLAGS="$xla_flags" \
    JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$processes" \
    JAX_PROCESS_ID="$i" "$python" "$@"
done
wait_processes
