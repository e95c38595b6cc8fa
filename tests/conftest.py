"""Test set-up: 8 fake CPU devices and a persistent compilation cache.

Both must happen before JAX initialises its backends, so this runs at import.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "RESEARCH_COMPILE_CACHE", os.path.expanduser("~/.cache/research/jax_compile")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end runs; `make test` runs them in a bounded form")


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "workdir")
