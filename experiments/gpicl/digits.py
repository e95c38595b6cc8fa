r"""GPICL on scikit-learn digits: the default experiment (`make train`).

Meta-trains a transformer on tasks made from the 8×8 digits (64 dims) by random
projections (std 1/√64) and label permutations, then evaluates the ICL curve on
seen tasks, unseen tasks (ids ≥ 2^30), the unprojected digits, and on wine,
breast_cancer, iris and mnist1d under unseen tasks (never trained on).

Layout: this default uses the "query" layout (each example's label in the same
token as its input; separate query tokens), not the paper's "label of the
previous example in the next token" layout: with the paper's layout alone the
loss stays on the ln 10 plateau for the whole CPU budget (up to 9353 steps
measured); experiments/gpicl/paper_layout_cpu.py adds the curriculum that gets it
off the plateau in ~5 min (experiments/gpicl/README.md). Select the paper's layout
with `:layout=paper`.

Command:
  python -m launch.main --config experiments/gpicl/digits.py --workdir runs/gpicl_digits
Variants:
  :tiny                      a few steps, for tests
  :layout=paper              the paper's token layout ("" = the learner's default:
                             query for the transformer, paper for LSTMs)
  :num_tasks=256             fewer tasks (task identification instead of learning)
  :learner=lstm              any learner of experiments/gpicl/learners.py

Expected result (measured 2026-11-26 with `make train` on the 2-core dev machine,
load average ~6 from other jobs: 5 min 35 s wall, 6.1 steps/s, ~39 GFLOP/s): the
loss of ordinary tasks leaves ln 10 at step 650, the run ends in the
learning-to-learn phase; accuracy after 1 / 5 / 10 / 31 examples:
  seen      0.164 0.281 0.340 0.668      wine           0.309 0.758 0.805 0.891
  unseen    0.168 0.281 0.352 0.641      breast_cancer  0.434 0.684 0.738 0.801
  identity  0.098 0.336 0.473 0.680      iris           0.305 0.715 0.758 0.785
                                         mnist1d        0.129 0.098 0.121 0.219
(chance 0.1 for the 10-class sets, 1/3 for wine and iris, 1/2 for breast_cancer).
"""
import ml_collections
from ml_collections import config_dict

from experiments import common
from experiments.gpicl import learners

def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, layout="", num_tasks=2**16, seed=0, steps=0,
                       learner="transformer")
  c = ml_collections.ConfigDict()
  c.task = "gpicl"
  c.seed = a.seed
  c.peak_flops = config_dict.placeholder(float)  # FLOP/s per device for MFU; None = measure.

  c.data = ml_collections.ConfigDict(dict(
      dataset="digits", input_dim=64, num_classes=10, seq_len=32, split_seed=0,
      pca_dim=0,                    # > 0: each set reduced to its top principal components.
      # "device": batches sampled inside the jitted step; "host": each process builds
      # its own rows (jax.make_array_from_process_local_data), the multi-host path.
      pipeline="device"))
  c.tasks = ml_collections.ConfigDict(dict(
      num_tasks=a.num_tasks,        # Size of the task-id pool (2^0 … 2^25).
      task_seed=0,
      proj_std=config_dict.placeholder(float),  # None = 1/sqrt(input_dim), as the paper.
      bias_std=0.0,
      permute_prob=1.0,             # Every task permutes its labels.
      bias_fraction=0.0,            # Fraction of each batch on task 0 (plateau intervention).
      sequences_per_task=1,         # Sequences per sampled task (the paper: 512 = 16 × 32).
  ))
  # Step-dependent curricula, all off (research/gpicl/curriculum.py): each moves
  # from its start to the paper's setting over `steps` steps, after `hold_steps`.
  c.curriculum = ml_collections.ConfigDict(dict(
      steps=0, hold_steps=0,
      num_tasks_start=0,            # Task pool grows geometrically from this to num_tasks.
      classes_start=0,              # Classes per sequence grow from this to all.
      loss_len_start=0,             # Loss on the first L_t positions, L_t up to seq_len.
  ))
  c.model = learners.learner_config(a.learner, "tiny" if a.tiny else "small", a.layout)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip=1.0))
  c.schedule = ml_collections.ConfigDict(dict(name="constant", warmup_steps=0, final_fraction=0.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=a.steps or 2000, batch_size=128, grad_accum_steps=1,
      log_every=50, eval_every=250, checkpoint_every=500, keep_checkpoints=3,
      on_nonfinite="skip", max_nonfinite_steps=20, tensorboard=True, progress=True))
  c.eval = ml_collections.ConfigDict(dict(
      num_sequences=256, seed=1234, datasets=("wine", "breast_cancer", "iris", "mnist1d")))
  c.mesh = (("data", -1), ("model", 1))
  c.sharding = ml_collections.ConfigDict(dict(rules="dp"))

  if a.tiny:
    c.data.seq_len = 12
    c.train.update(num_steps=a.steps or 6, batch_size=16, log_every=2, eval_every=3,
                   checkpoint_every=3, tensorboard=False, progress=False)
    c.eval.update(num_sequences=16, datasets=("wine",))
  c.lock()
  return c
