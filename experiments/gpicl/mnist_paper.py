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
from experiments import common
from research.gpicl import defaults

EVAL_DATASETS = ("tfds:fashion_mnist", "tfds:kmnist", "tfds:cifar10", "tfds:svhn", "random")


def get_config(arg=None, *, input_dim=196):
  a = common.parse_arg(arg, tiny=False, layout="paper", num_tasks=2**25, seed=0, steps=0,
                       learner="transformer")
  c = defaults.get_config(a.learner, "tiny" if a.tiny else "paper", a.layout)
  c.seed = a.seed
  c.data.update(dataset="tfds:mnist", input_dim=input_dim, seq_len=100)
  c.tasks.update(num_tasks=a.num_tasks,
                 sequences_per_task=32)  # The paper's batch: 16 tasks × 32 sequences.
  c.train.update(num_steps=a.steps or 50_000, batch_size=512, log_every=100, eval_every=2500,
                 checkpoint_every=2500)
  c.eval.update(num_sequences=512, datasets=EVAL_DATASETS)
  if a.tiny:
    c.data.seq_len = 12
    # Every sequence materialises its own d×d projection (B·d² floats: 600 MB at
    # d = 3072 and B = 16), so the tiny form keeps B small.
    common.tiny_train(c, num_steps=a.steps or 4, batch_size=8, eval_every=2)
    c.train.checkpoint_every = 4
    c.eval.update(num_sequences=4, datasets=("tfds:fashion_mnist", "random"))
    c.tasks.sequences_per_task = 4
  return c.lock()
