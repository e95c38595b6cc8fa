#!/bin/bash
# The bounded validation study of experiments/mend/README.md, one phase per call:
#   bash experiments/mend/study.sh PHASE
# Every command resumes (or skips) a run that is already there, so a phase can be
# stopped and started again. Runs go to runs/mend/study/, logs to runs/mend/logs/.
# Common settings: stage 2 from the stage-1 run runs/mend/pt_80, lr 3e-4, batch 4,
# K = 16, l = 16, 400 steps, 800 episodes, 4 buckets, top-64 teacher cache; validation
# during training on the held-out generated tasks (gen*_to_val), every 200 steps.
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/env.sh
PY=${PY:-.venv/bin/python}
S=runs/mend/study
ROOT=runs/mend/suite_s0_t64_m512_gen600
COMMON=(--config.data.suite_dir=runs/mend --config.data.max_length=384
        --config.data.max_row_tokens=48 --config.optimizer.learning_rate=3e-4
        --config.init_from=runs/mend/pt_80 --config.train.eval_every=200
        --config.train.checkpoint_every=100 --config.train.keep_checkpoints=8)
mkdir -p $S runs/mend/logs

train() {  # train NAME CONFIG_ARG [extra flags]
  local name=$1 arg=$2; shift 2
  nice -n 5 $PY -m launch.main --config "experiments/mend/finetune.py:$arg" --workdir "$S/$name" \
      "${COMMON[@]}" "$@" >> "runs/mend/logs/$name.log" 2>&1
}

val_eval() {  # val_eval NAME METHODS...: MEND vs ICL on the 11 held-out generated tasks
  local name=$1; shift
  local methods
  methods=$(printf "'%s'," "$@")
  nice -n 5 $PY -m launch.main --config experiments/mend/evaluate.py:partition=gen500_to_val \
      --workdir "$S/$name" --config.data.root=$ROOT --config.data.n_test=24 \
      --config.data.seeds="(13,21)" --config.methods="(${methods%,})" \
      >> "runs/mend/logs/$name.log" 2>&1
}

case "${1:-}" in
  tasks)     # Task count: 10 / 100 / 500 generated meta-train tasks, no dropout.
    train t10 steps=400,tasks=10,episodes=800
    train t100 steps=400,tasks=100,episodes=800
    train t500 steps=400,tasks=500,episodes=800
    val_eval eval_tasks zero_shot icl "t10=$S/t10" "t100=$S/t100" "t500=$S/t500" ;;
  knobs)     # On the chosen task count N (argument 2): dropout, l, λ = 0 (HyperTuning-style).
    n=${2:?task count}
    train t${n}_drop steps=400,tasks=$n,episodes=800,dropout=0.1
    train t${n}_l32 steps=400,tasks=$n,episodes=800,vectors=32
    train t${n}_ht steps=400,tasks=$n,episodes=800,kl=0
    val_eval eval_knobs "t${n}=$S/t${n}" "t${n}_drop=$S/t${n}_drop" "t${n}_l32=$S/t${n}_l32" \
        "t${n}_ht=$S/t${n}_ht" ;;
  temperature)  # T = 2 on the chosen configuration (argument 2: its config arg).
    train chosen_T2 "${2:?config arg},temperature=2"
    val_eval eval_temperature "chosen_T2=$S/chosen_T2" ;;
  steps)     # Validation accuracy of a run's checkpoints (argument 2: run name).
    n=${2:?run name}
    val_eval eval_steps_$n "$n@100=$S/$n@100" "$n@200=$S/$n@200" "$n@300=$S/$n@300" ;;
  *) echo "usage: $0 tasks | knobs N | temperature ARG | steps RUN"; exit 2 ;;
esac
