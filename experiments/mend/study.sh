#!/bin/bash
# The bounded validation study of experiments/mend/README.md, one phase per call:
#   bash experiments/mend/study.sh PHASE
# Every command resumes (or skips) a run that is already there, so a phase can be
# stopped and started again. Runs go to runs/mend/study/, logs to runs/mend/logs/.
# Common settings: stage 2 from the stage-1 run runs/mend/pt_80 (80 steps of
# pretrain.py, lr 3e-4), lr 3e-4, batch 4, K = 16, l = 16, 200 steps, a table of 320
# episodes, 4 buckets, top-64 teacher cache; validation CE/KL during training on the 11
# held-out generated tasks (gen*_to_val) every 100 steps; checkpoints at 100 and 200.
# Validation accuracy (macro-F1 on those 11 tasks, 16 queries each, seeds 13 and 21):
# the val_eval runs. The meta-test tasks are read only by the `final` phase.
set -euo pipefail
cd "$(dirname "$0")/../.."
source launch/env.sh
PY=${PY:-.venv/bin/python}
S=runs/mend/study
ROOT=runs/mend/suite_s0_t64_m512_gen600
COMMON=(--config.data.suite_dir=runs/mend --config.data.max_length=384
        --config.data.max_row_tokens=48 --config.optimizer.learning_rate=3e-4
        --config.init_from=runs/mend/pt_80 --config.train.eval_every=100
        --config.train.checkpoint_every=100 --config.train.keep_checkpoints=8)
STUDY=steps=200,episodes=320  # `long` overrides steps (the same table of episodes).
mkdir -p $S runs/mend/logs

train() {  # train NAME CONFIG_ARG [extra flags]
  local name=$1 arg=$2; shift 2
  # One failed run is reported and the phase goes on to the next.
  nice -n 5 $PY -m launch.main --config "experiments/mend/finetune.py:$arg" --workdir "$S/$name" \
      "${COMMON[@]}" "$@" >> "runs/mend/logs/$name.log" 2>&1 \
    || echo "run $name failed: runs/mend/logs/$name.log" >&2
}

val_eval() {  # val_eval NAME METHODS...: MEND vs ICL on the 11 held-out generated tasks
  local name=$1; shift
  local methods
  methods=$(printf "'%s'," "$@")
  nice -n 5 $PY -m launch.main --config experiments/mend/evaluate.py:partition=gen500_to_val \
      --workdir "$S/$name" --config.data.root=$ROOT --config.data.n_test=16 \
      --config.data.seeds="(13,21)" --config.methods="(${methods%,})" \
      >> "runs/mend/logs/$name.log" 2>&1
}

case "${1:-}" in
  tasks)     # Task count: 10 / 100 / 500 generated meta-train tasks, no dropout.
    for n in 10 100 500; do train t$n $STUDY,tasks=$n; done
    val_eval eval_tasks zero_shot icl "t10@100=$S/t10@100" "t10=$S/t10" "t100@100=$S/t100@100" \
        "t100=$S/t100" "t500@100=$S/t500@100" "t500=$S/t500" ;;
  knobs)     # On the chosen task count N (argument 2): dropout 0.1, l = 32, λ = 0, T = 2.
    n=${2:?task count}
    train t${n}_drop $STUDY,tasks=$n,dropout=0.1
    train t${n}_l32 $STUDY,tasks=$n,vectors=32
    train t${n}_ht $STUDY,tasks=$n,kl=0
    train t${n}_T2 $STUDY,tasks=$n,temperature=2
    val_eval eval_knobs "t${n}_drop=$S/t${n}_drop" "t${n}_l32=$S/t${n}_l32" \
        "t${n}_ht=$S/t${n}_ht" "t${n}_T2=$S/t${n}_T2" ;;
  final)     # The meta-test tasks of gen{N}_to_class (argument 2: N), 5 seeds, 32 queries per
             # task: zero-shot, ICL, prompt tuning and the LABEL=RUN entries that follow.
    n=${2:?N}; shift 2
    methods=$(printf "'%s'," zero_shot icl prompt_tuning "$@")
    nice -n 5 $PY -m launch.main --config "experiments/mend/evaluate.py:partition=gen${n}_to_class" \
        --workdir "$S/final" --config.data.root=$ROOT --config.data.n_test=32 \
        --config.methods="(${methods%,})" >> runs/mend/logs/final.log 2>&1 ;;
  long)      # The chosen configuration (argument 2: its config arg) for 400 steps.
    train "${3:-chosen_400}" "${2:?config arg},steps=400" ;;
  *) echo "usage: $0 tasks | knobs N | long ARG [NAME] | final N LABEL=RUN..."; exit 2 ;;
esac
