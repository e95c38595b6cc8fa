"""Every key of a GPICL config, declared once with its default and meaning.

Configs in `experiments/gpicl/` start from `get_config()` and change a few keys;
a key that is not here does not exist (a typo on the command line fails).
"""
import ml_collections
from ml_collections import config_dict

from research import config as config_lib
from research import families
from research.gpicl import learners


def get_config(learner: str = "transformer", size: str = "small",
               layout: str = "") -> ml_collections.ConfigDict:
  """The defaults: digits, 2^16 tasks, the `size` form of `learner` (its own layout
  unless `layout` is given), 2000 steps of Adam 1e-3 at batch 128."""
  c = config_lib.trainer_sections(ml_collections.ConfigDict())
  c.task = "gpicl"
  c.data = ml_collections.ConfigDict(dict(
      # Task family of the training sequences (research/families/: projection, linear_regression,
      # sparse_linear_regression, decision_tree, relu_net, bursty, clusters, mixture); its keys are
      # config.families.<name> (projection's: the data and tasks sections).
      family="projection",
      dataset="digits",             # Base data of the tasks (research/data/offline.py, tfds:...).
      input_dim=64,                 # Inputs zero-padded / cut (TFDS: resized) to this size.
      num_classes=10,               # Classes (logits) of the learner; 1 for real-valued targets.
      seq_len=32,                   # Examples per sequence.
      split_seed=0,                 # Train/test split of the base data.
      pca_dim=0,                    # > 0: each set reduced to its top principal components.
      # "device": batches sampled inside the jitted step; "host": each process builds
      # its own rows (jax.make_array_from_process_local_data), the multi-host path.
      pipeline="device",
  ))
  c.tasks = ml_collections.ConfigDict(dict(
      num_tasks=2**16,              # Size of the task-id pool (2^0 … 2^25).
      task_seed=0,                  # Task i is a pure function of (task_seed, i).
      proj_std=config_dict.placeholder(float),  # None = 1/sqrt(input_dim), as the paper.
      bias_std=0.0,                 # Std of the per-task input bias.
      permute_prob=1.0,             # Probability that a task permutes its labels.
      bias_fraction=0.0,            # Fraction of each batch on task 0 (plateau intervention).
      bias_num_tasks=1,             # > 1: the biased sequences draw from tasks 0..k-1.
      bias_shared_projection=False,  # Biased sequences share task 0's projection.
      sequences_per_task=1,         # Sequences per sampled task (the paper: 512 = 16 × 32).
      classes_min=0,                # k >= 2: each sequence from a random subset of k..C classes.
      features_min=0,               # m >= 1: each sequence keeps a random m..all of the features.
  ))
  c.families = families.config_section()  # Every other family's keys (research/families/).
  # Step-dependent curricula, all off (research/gpicl/curriculum.py): each moves
  # from its start to the paper's setting over `steps` steps, after `hold_steps`.
  c.curriculum = ml_collections.ConfigDict(dict(
      steps=0, hold_steps=0,
      num_tasks_start=0,            # Task pool grows geometrically from this to num_tasks.
      classes_start=0,              # Classes per sequence grow from this to all.
      loss_len_start=0,             # Loss on the first L_t positions, L_t up to seq_len.
      dim_start=0,                  # Function families: active input dims grow from this to dim.
  ))
  # The learner: its name and every field of its module (models/, LEARNERS registry).
  has_layout = "layout" in learners.config_defaults(learner)
  c.model = learners.learner_config(learner, size,
                                    **({"layout": layout} if layout and has_layout else {}))
  c.optimizer.update(name="adam", learning_rate=1e-3, grad_clip=1.0)
  c.train.update(num_steps=2000, batch_size=128, log_every=50, eval_every=250,
                 checkpoint_every=500)
  c.eval = ml_collections.ConfigDict(dict(
      num_sequences=256,            # Sequences per evaluation set (fixed keys).
      seed=1234,                    # Key of the evaluation sequences.
      datasets=("wine", "breast_cancer", "iris", "mnist1d"),  # Never trained on (unseen tasks).
      families=(),                  # Families never trained on, evaluated with their own sets.
      # Classical learners fitted on each evaluation sequence's context (research/classical/),
      # in the final table and figure next to the model; those that do not apply are skipped.
      classical=("knn1", "knn_sqrt", "logistic"),
  ))
  return c
