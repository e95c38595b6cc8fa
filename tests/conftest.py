"""Test set-up: 8 fake CPU devices and a persistent compilation cache.

Both must happen before JAX initialises its backends, so this runs at import.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests compile at XLA's CPU backend level 1 (runs and benches keep the default, 2): the
# same HLO, and results bit-identical to level 2 (measured: every logged value of the GPICL
# digits and MEND finetune tiny runs), with a third less compile time, which is most of a
# suite that compiles hundreds of tiny programs once (GPICL digits tiny: 12.9 -> 8.7 s).
# Children (launch.main, notebook kernels) inherit it; test_train checks level 1 = level 2.
# Not on an accelerator (launch/accelerator_check.sh runs its tests with JAX_PLATFORMS="").
# (Importing jax reads JAX_PLATFORMS; XLA_FLAGS is read when the backend starts.)
from research import compiling  # noqa: E402

if (os.environ["JAX_PLATFORMS"] == "cpu"
    and compiling.OPT_LEVEL not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --{compiling.OPT_LEVEL}=1").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

compiling.use_persistent_cache()


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end runs; `make test` runs them in a bounded form")


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "workdir")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_notebook(monkeypatch):
  """Executes notebooks/<name> top to bottom with extra environment variables
  (each notebook's tiny mode); returns the outputs of its code cells."""
  def run(name, env, timeout=600):
    # The kernel sees the 8 devices the tests see: its tiny runs then compile the programs
    # the in-process tests of the same configs compile, and read them from the shared
    # persistent cache (measured: the MEND notebook 55 -> 27 s after tests/mend/test_mend_runs).
    env = dict({"JAX_NUM_CPU_DEVICES": 8}, **env)
    import nbclient
    import nbformat
    for key, value in env.items():
      monkeypatch.setenv(key, str(value))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}}).execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  return run
