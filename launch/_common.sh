# shellcheck shell=bash
# Sourced by the launch scripts: DRY_RUN=1 printing, and the processes of one
# machine started together, their output lines prefixed "[pID] ", stopped
# together when one fails.
#   source launch/_common.sh    # from the repository root

_pids=()
_ids=()
_printers=()
_fifos=""

dry_run() {
  [[ "${DRY_RUN:-0}" == 1 ]]
}

# One line a shell reads back as the same words.
print_command() {
  local line
  line="$(printf '%q ' "$@")"
  echo "${line% }"
}

# Exits naming NAME unless VALUE is an integer >= MIN.
need_int() {
  local name="$1" value="$2" min="$3"
  if ! [[ "$value" =~ ^(0|[1-9][0-9]*)$ ]] || ((value < min)); then
    echo "$(basename "$0"): $name=$value: expected an integer >= $min." >&2
    exit 2
  fi
}

# Runs a command, or prints it under DRY_RUN=1.
run() {
  if dry_run; then print_command "$@"; else "$@"; fi
}

# Starts COMMAND... in the background as process ID (printed under DRY_RUN=1).
start_process() {
  local id="$1"
  shift
  if dry_run; then
    print_command "$@"
    return
  fi
  if [[ -z "$_fifos" ]]; then
    _fifos="$(mktemp -d)"
    trap _on_exit EXIT
    trap _forward_stop INT TERM
  fi
  # A FIFO rather than a pipe: $! is then the process itself (to stop it),
  # and the printer is this shell's child (to wait for its last lines).
  mkfifo "$_fifos/p$id"
  awk -v prefix="[p$id] " '{ print prefix $0; fflush() }' <"$_fifos/p$id" &
  _printers+=("$!")
  "$@" >"$_fifos/p$id" 2>&1 &
  _pids+=("$!")
  _ids+=("$id")
}

# Waits for every process; the first to fail stops the others and its exit
# status is returned.
wait_processes() {
  local i status
  while ((${#_pids[@]})); do
    for i in "${!_pids[@]}"; do
      if kill -0 "${_pids[i]}" 2>/dev/null; then
        continue
      fi
      status=0
      wait "${_pids[i]}" || status=$?
      if ((status)); then
        echo "$(basename "$0"): process ${_ids[i]} exited with status" \
          "$status; stopping the others." >&2
        unset "_pids[i]" "_ids[i]"
        _stop_processes
        return "$status"
      fi
      unset "_pids[i]" "_ids[i]"
    done
    sleep 1
  done
  _wait_printers
}

# A failed peer leaves the others blocked in collectives: TERM them, KILL
# what is left after STOP_GRACE_S.
_stop_processes() {
  local waited=0
  ((${#_pids[@]})) || return 0
  kill -TERM "${_pids[@]}" 2>/dev/null || true
  while ((waited < ${STOP_GRACE_S:-10})); do
    kill -0 "${_pids[@]}" 2>/dev/null || break
    sleep 1
    waited=$((waited + 1))
  done
  kill -KILL "${_pids[@]}" 2>/dev/null || true
  wait "${_pids[@]}" 2>/dev/null || true
  _pids=()
  _wait_printers
}

# Ctrl-C or a scheduler's TERM: a training process saves at its next step
# and stops, so tell every process and keep waiting for them.
_forward_stop() {
  echo "$(basename "$0"): stopping every process." >&2
  ((${#_pids[@]} == 0)) || kill -TERM "${_pids[@]}" 2>/dev/null || true
}

# Their last lines, so that they come before this script's own.
_wait_printers() {
  ((${#_printers[@]} == 0)) || wait "${_printers[@]}" 2>/dev/null || true
  _printers=()
}

# Leaves no process or FIFO behind, whatever ended the script.
_on_exit() {
  _stop_processes
  rm -rf "$_fifos"
}
