r"""GPICL at paper scale: meta-trained on MNIST (Kirsch et al. 2022, Table 1 / Fig. 2).

Paper set-up: MNIST resized to 14×14 grey (196 dims), z-normalised over all
pixels and examples; tasks = random projection (std 1/√196) + label permutation;
the paper's token layout (input ⊕ one-hot of the previous label); transformer
with 4 layers, 8 heads, key size 32, model size 256; 512 sequences of 100
examples per step (the paper groups them as 16 tasks × 32 sequences; here every
sequence draws its own task id); Adam lr 1e-3, ε 1e-8; 50k steps; 2^25 tasks.
Evaluated on unseen tasks of MNIST, FashionMNIST, KMNIST, CIFAR10, SVHN (test
splits, same 14×14 grey preprocessing) and Random.

Memory: each sequence materialises its own projection, B·d² floats (0.4 GB at
d = 196, 19 GB at d = 3072 for B = 512); the paper shares one task across 32
sequences, which this sampler does not do yet.

Needs a GPU/TPU and the prepared TFDS sets (once, with internet):
  python -m research.data.prepare mnist fashion_mnist kmnist cifar10 svhn_cropped
Command:
  python -m launch.main --config experiments/gpicl/mnist_paper.py --workdir runs/gpicl_mnist_paper
Variants: `:tiny` (seconds; the tests run it on mocked TFDS data),
  `:num_tasks=N`, `:learner=lstm|outer_lstm|mlp|sgd|maml`, `:layout=query`.

Expected (paper, Table 1, accuracy after 99 examples, %): MNIST 73.7,
FashionMNIST 62.2, KMNIST 53.4, Random 100, CIFAR10 19.4, SVHN 14.6; learning
curve on MNIST ≈ 0.45 after 20 examples, ≈ 0.65 after 50, ≈ 0.74 after 100.
NOT run on this 2-core CPU machine (no GPU, no internet for the data): these are
the paper's numbers, not a measurement of this code.
"""
import ml_collections
from ml_collections import config_dict

from experiments import common
from experiments.gpicl import learners

EVAL_DATASETS = ("tfds:fashion_mnist", "tfds:kmnist", "tfds:cifar10", "tfds:svhn", "random")


def get_config(arg=None, *, input_dim=196):
  a = common.parse_arg(arg, tiny=False, layout="paper", num_tasks=2**25, seed=0, steps=0,
                       learner="transformer")
  c = ml_collections.ConfigDict()
  c.task = "gpicl"
  c.seed = a.seed
  c.peak_flops = config_dict.placeholder(float)
  c.data = ml_collections.ConfigDict(dict(
      dataset="tfds:mnist", input_dim=input_dim, num_classes=10, seq_len=100, split_seed=0,
      # "device": batches sampled inside the jitted step; "host": each process builds
      # its own rows (jax.make_array_from_process_local_data), the multi-host path.
      pipeline="device"))
  c.tasks = ml_collections.ConfigDict(dict(
      num_tasks=a.num_tasks, task_seed=0, proj_std=config_dict.placeholder(float),
      bias_std=0.0, permute_prob=1.0, bias_fraction=0.0,
      sequences_per_task=32))  # The paper's batch: 16 tasks × 32 sequences.
  c.model = learners.learner_config(a.learner, "tiny" if a.tiny else "paper", a.layout)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      grad_clip=1.0))
  c.schedule = ml_collections.ConfigDict(dict(name="constant", warmup_steps=0, final_fraction=0.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=a.steps or 50_000, batch_size=512, grad_accum_steps=1,
      log_every=100, eval_every=2500, checkpoint_every=2500, keep_checkpoints=3,
      on_nonfinite="skip", max_nonfinite_steps=20, tensorboard=True, progress=True))
  c.eval = ml_collections.ConfigDict(dict(num_sequences=512, seed=1234, datasets=EVAL_DATASETS))
  c.mesh = (("data", -1), ("model", 1))
  c.sharding = ml_collections.ConfigDict(dict(rules="dp"))
  if a.tiny:
    c.data.seq_len = 12
    # Every sequence materialises its own d×d projection (B·d² floats: 600 MB at
    # d = 3072 and B = 16), so the tiny form keeps B small.
    c.train.update(num_steps=a.steps or 4, batch_size=8, log_every=2, eval_every=2,
                   checkpoint_every=4, tensorboard=False, progress=False)
    c.eval.update(num_sequences=4, datasets=("tfds:fashion_mnist", "random"))
    c.tasks.sequences_per_task = 4
  c.lock()
  return c
