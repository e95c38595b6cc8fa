#!/bin/bash
# MEND at the paper's size, both stages, one command (resumable: run it again after any
# stop, preemption or kill -9 and it continues where the checkpoints are):
#   bash experiments/mend/run_paper.sh [LLM] [WORKDIR]
# LLM: a GPT-2-size frozen LLM (a GGUF file or an HF checkpoint folder, e.g. GPT-2 large);
# empty = SmolLM2-135M. Stage 1: 30k steps on C4 (TFDS c4/en must be prepared; with
# CORPUS=offline the packaged text instead), lr 5e-5. Stage 2: 30k steps on the 500
# generated meta-train tasks (TASKS=N to change), lr 1e-5, 120k episodes, 0.1 dropout in
# all three passes (the released code's train mode), distiller = the LLM's first 12 blocks,
# l = 100. Then the 5-seed meta-test evaluation next to zero-shot, ICL and prompt tuning.
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/env.sh
PY=${PY:-.venv/bin/python}
LLM=${1:-}
W=${2:-runs/mend_paper}
TASKS=${TASKS:-500}
CORPUS=${CORPUS:-c4}
$PY -m launch.main --config "experiments/mend/pretrain.py:paper,llm=$LLM" --workdir "$W/pt" \
    --config.data.corpus="$CORPUS"
$PY -m launch.main --config "experiments/mend/finetune.py:paper,llm=$LLM,tasks=$TASKS" \
    --workdir "$W/ft" --config.init_from="$W/pt" --config.data.suite_dir="$W"
$PY -m launch.main --config "experiments/mend/evaluate.py:partition=gen${TASKS}_to_class" \
    --workdir "$W/eval" --config.data.generated_tasks=600 --config.data.suite_dir="$W" \
    --config.methods="('zero_shot','icl','prompt_tuning','mend=$W/ft')" \
    ${LLM:+--config.model.source=$([[ $LLM == *.gguf ]] && echo gguf || echo hf) --config.model.path=$LLM}
