#!/usr/bin/env bash
# Issue #21's prepared GPU run: every figure only a GPU can give, one JSON file each in $OUT.
# On the device machine:   bash benchmarks/gpu_suite.sh            (about 15 minutes on one H100/H200)
# Smoke run on a CPU:      SMOKE=1 OUT=/tmp/gpu-smoke bash benchmarks/gpu_suite.sh
# Each step has its own time limit and a failed step does not stop the others; steps.tsv
# lists every step with its exit status and seconds.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SMOKE=${SMOKE:-0}

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/steps.tsv"
}

(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
python - > "$OUT/versions.json" <<'PY'
import json, platform
import torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
try:
    import peft, accelerate
    info.update(peft=peft.__version__, accelerate=accelerate.__version__)
except ImportError:
    pass
print(json.dumps(info))
PY

if [ "$SMOKE" = 1 ]; then
  step kernels 300 python benchmarks/bench_device_kernels.py --device cpu --quick
  step attention_kl 300 python benchmarks/bench_attention_kl.py --device cpu --quick
  step capture 300 python benchmarks/bench_attention_capture.py --tiny --quick
  step capture_families 300 python benchmarks/bench_attention_capture.py --tiny --quick --family all
  step train_curriculum 300 python benchmarks/bench_train_curriculum.py --tiny --quick
else
  # the cheap kernels first, so a short lease still gives figures
  step kernels 120 python benchmarks/bench_device_kernels.py --device cuda
  step attention_kl 120 python benchmarks/bench_attention_kl.py --device cuda
  # 7B-class random-initialised VIP-LLaVA, LoRA r16, bf16, 744 tokens, 8 supervised layers
  step capture_b4 180 python benchmarks/bench_attention_capture.py --batch 4 --quick
  step capture_b8 180 python benchmarks/bench_attention_capture.py --batch 8 --quick
  step train_curriculum 240 python benchmarks/bench_train_curriculum.py --quick --gradient-checkpointing
  # the other families' 7B-class shapes (Gemma 3: 4B = MedGemma-4B), batch 4, a suite step each so
  # that a slow build or an out-of-memory in one does not cost the others
  for family in qwen2_5_vl qwen3_vl gemma3 llava_onevision; do
    step "capture_$family" 180 python benchmarks/bench_attention_capture.py --family "$family" --batch 4 --quick
  done
fi
echo "results in $OUT"
