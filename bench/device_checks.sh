#!/usr/bin/env bash
# Every GPU figure issues 16 and 17 ask for, in one run sized for a short
# device lease (~6 minutes on one H100): JSON lines, one per measurement,
# into OUT_DIR/device_checks.jsonl (and on stdout).
#
#   - the trainer's step at ELMER-base, 512/512, bf16, batch 32, AdamW:
#     MFU against 989 TFLOP/s with the plain settings ("before") and those
#     of experiments/pretrain_c4_wiki_base_gpu.gin ("after"), each with its
#     15 busiest ops (issue 17);
#   - NAR decoding against transformers' greedy generation of a same-sized
#     BART, both on the GPU, batch 1 and 32, 64- and 256-token sources, bf16
#     and (batch 1) fp32 (issue 16).
#
# A GPU host's image holds jax[cuda], flax, optax, torch and transformers but
# not gin-config: bring its wheel into .whl/ first (here, in the repository
# root: `python3 -m pip download --no-deps -d .whl gin-config==0.5.0`, with
# .whl/ in .git/info/exclude), then on the device:
#
#   bench/device_checks.sh "$OUT"
#
# `--smoke` runs the same steps at toy sizes on whatever JAX finds (CPU
# here): it checks the script, not the figures.
set -uo pipefail
out=${1:?usage: bench/device_checks.sh OUT_DIR [--smoke]}
smoke=${2:-}
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ -d .whl ] && ! "$py" -c "import gin" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --target /tmp/device_site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/device_site
fi
export PYTHONPATH=gin_configs:bench${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
log="$out/device_checks.jsonl"
: > "$log"

if [ "$smoke" = --smoke ]; then
  model=models/tiny.gin; shape=(--batch=8 --encoder_length=32
                                 --decoder_length=32 --steps=2)
  attention=xla; sources=32; decode=(--batches=1 --repeats=2)
else
  model=models/base.gin; shape=(--batch=32 --encoder_length=512
                                 --decoder_length=512 --steps=10)
  attention=cudnn; sources=64,256; decode=(--batches=1,32 --repeats=5)
fi

run() {  # A name, a time limit in seconds, then the command.
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" >&2
  timeout "$limit" "$@" | grep '^{' | sed "s/^{/{\"check\": \"$name\", /" \
    | tee -a "$log"
  local status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || echo "{\"check\": \"$name\", \"failed\": $status}" \
    | tee -a "$log"
}

"$py" -c 'import json, jax, torch; print(json.dumps({"jax": jax.__version__,
  "devices": [d.device_kind for d in jax.devices()],
  "torch": torch.__version__, "cuda": torch.cuda.is_available()}))' \
  | sed 's/^{/{"check": "environment", /' | tee -a "$log"

bf16=(--gin="config.ElmerConfig.dtype='bfloat16'")
run step_before 240 "$py" bench/train_throughput.py --gin_file=$model \
  "${shape[@]}" "${bf16[@]}" --peak_tflops=989 --profile_top=15
run step_after 240 "$py" bench/train_throughput.py --gin_file=$model \
  "${shape[@]}" "${bf16[@]}" --peak_tflops=989 --profile_top=15 \
  --gin="config.ElmerConfig.attention_impl='$attention'" \
  --gin="config.ElmerConfig.attention_dropout_rate=0.0" \
  --gin="config.ElmerConfig.fused_qkv=True" \
  --exit_sampling=permutation --fused_loss --skip_exited_tokens \
  --dropout_prng=unsafe_rbg
run decode_bf16 240 "$py" bench/generation.py --gin_file=$model \
  --source_lengths=$sources "${decode[@]}" --dtype=bfloat16
run decode_fp32 120 "$py" bench/generation.py --gin_file=$model \
  --batches=1 --source_lengths=$sources --repeats=5 --dtype=float32
