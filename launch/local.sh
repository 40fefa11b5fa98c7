#!/usr/bin/env bash
# Runs an elmer_jax command on this machine's CPU with N fake devices, the way
# sharding tests and small experiments do:  launch/local.sh 8 bench/forward_backward.py
set -euo pipefail
devices="${1:?usage: launch/local.sh NUM_DEVICES SCRIPT [ARGS...]}"
shift
cd "$(dirname "$0")/.."
export XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}"
exec .venv/bin/python "$@"
