#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: puts this checkout on every worker, installs
# it with the TPU extra and starts the same command on all workers at once
# (JAX finds its peers itself). Every worker's output streams here and is
# appended to ~/elmer_train.log on that worker.
#   TPU=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#     --gin_file=experiments/pretrain_c4_wiki_base.gin --model_dir=gs://bucket/run
# The arguments (after an optional --) go to `python -m $MODULE` unchanged.
# Env: TPU, ZONE (required), PROJECT; CREATE=1 creates the TPU VM first with
# ACCELERATOR_TYPE (v4-32) and RUNTIME_VERSION (tpu-ubuntu2204-base, for v4;
# newer TPUs have their own); REPO_URL [REPO_REF] clones on the workers instead
# of copying the committed and uncommitted tracked files; SETUP=0 skips copy
# and install (a restart); REMOTE_DIR (elmer_jax, under the workers' home),
# REMOTE_PYTHON (python3), MODULE (elmer_jax.train); DRY_RUN=1 prints the
# commands instead.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone, e.g. us-central2-b}"
cd "$(dirname "$0")/.."
source launch/_common.sh
if [[ "${1:-}" == "--" ]]; then
  shift
fi

where=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then
  where+=(--project="$PROJECT")
fi
dir="$(printf '%q' "${REMOTE_DIR:-elmer_jax}")"
python="$(printf '%q' "${REMOTE_PYTHON:-python3}")"

# Runs a shell command line on every worker.
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU" "${where[@]}" --worker=all \
    --command="$1"
}

if [[ "${CREATE:-0}" == 1 ]]; then
  run gcloud compute tpus tpu-vm create "$TPU" "${where[@]}" \
    --accelerator-type="${ACCELERATOR_TYPE:-v4-32}" \
    --version="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
fi

if [[ "${SETUP:-1}" == 1 ]]; then
  if [[ -n "${REPO_URL:-}" ]]; then
    on_workers "{ [ -d $dir/.git ] || git clone -q $(printf '%q' "$REPO_URL") $dir; } && git -C $dir fetch -q origin $(printf '%q' "${REPO_REF:-HEAD}") && git -C $dir checkout -q --detach FETCH_HEAD"
  else
    # A commit of the working tree (tracked files, edits included) that
    # touches no branch, index or stash; empty when nothing is edited.
    snapshot="$(git stash create)"
    tarball="${TMPDIR:-/tmp}/elmer_jax_$TPU.tar.gz"
    run git archive --format=tar.gz --output="$tarball" "${snapshot:-HEAD}"
    run gcloud compute tpus tpu-vm scp "$tarball" "$TPU:elmer_jax.tar.gz" \
      "${where[@]}" --worker=all
    on_workers "mkdir -p $dir && tar -xzf elmer_jax.tar.gz -C $dir"
  fi
  on_workers "cd $dir && $python -m pip install -q -e '.[tpu]'"
fi

train="$(printf '%q ' "${REMOTE_PYTHON:-python3}" -m "${MODULE:-elmer_jax.train}" "$@")"
on_workers "cd $dir && set -o pipefail && ${train}2>&1 | tee -a ~/elmer_train.log"
