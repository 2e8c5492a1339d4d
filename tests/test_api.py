"""The public surface: everything in the design's contract is importable from `bnn`."""

import platform
import sys

import pytest

import bnn


def test_all_names_resolve():
    for name in bnn.__all__:
        assert getattr(bnn, name) is not None, name


def test_contract_names():
    for name in ["BNN", "MLP", "Normal", "FanInNormal", "Gaussian", "Heteroscedastic", "Bernoulli", "Categorical",
                 "Fit", "Predictions", "weight_decay_to_prior_scale", "prior_scale_to_weight_decay"]:
        assert name in bnn.__all__, name
    for name in ["sine", "sine_grid", "hill", "polynomial", "uci", "from_csv"]:
        assert callable(getattr(bnn.datasets, name)), name
    for name in ["rmse", "mae", "nll", "coverage", "interval_width", "accuracy", "brier"]:
        assert callable(getattr(bnn.metrics, name)), name
    for name in ["prior_functions", "predictive", "loss_curve"]:
        assert callable(getattr(bnn.plot, name)), name


@pytest.mark.extended  # a fresh interpreter: an import-order regression guard
def test_importing_arviz_first_does_not_break_numpyro():
    """arviz_base loads numpyro lazily; bnn must still sample models with constrained sites."""
    import subprocess
    import sys

    code = (
        "import arviz, bnn, numpy as np\n"
        "x = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]\n"
        "fit = bnn.BNN(bnn.MLP((1,)), likelihood=bnn.Gaussian()).fit(x, 2 * x, method='nuts', num_chains=1, "
        "num_warmup=5, num_samples=5)\n"
        "print(fit.num_draws)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip().endswith("5")


def test_importing_bnn_changes_no_global_jax_setting():
    """The package leaves JAX's global configuration to the user (the CLI alone sets a cache)."""
    import subprocess
    import sys

    names = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
             "jax_compilation_cache_dir", "jax_platforms")
    code = (
        "import jax\n"
        f"names = {names!r}\n"
        "before = {n: getattr(jax.config, n) for n in names}\n"
        "import bnn, bnn.plot, bnn.sbc\n"
        "after = {n: getattr(jax.config, n) for n in names}\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


_HEAP_PROBE = """
import ctypes, sys
import numpy as np
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "limited":
    import bnn
    assert bnn.limit_heap_growth() is True
first = np.ones(1 << 20)  # 8 MiB, in a mapping of its own
del first                 # freed: glibc's dynamic threshold rises to its size
second = np.ones(1 << 20)
print(libc.mallinfo2().hblkhd)  # bytes in mappings of their own
"""


def _glibc_with_mallinfo2() -> bool:
    name, version = platform.libc_ver()
    return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 33)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="the mmap threshold is glibc's; mallinfo2 needs glibc >= 2.33")
def test_limit_heap_growth_gives_every_large_buffer_its_own_mapping():
    """After one 8 MiB buffer is freed, glibc serves the next from its heap (which then fragments and
    grows in a sampler's loop); with the threshold fixed at 4 MiB, it maps it anew and unmaps it on free."""
    import subprocess

    mapped = {mode: int(subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("plain", "limited")}
    assert mapped["plain"] < 8 << 20 <= mapped["limited"], mapped
    for bad, error in ((0, ValueError), ((32 << 20) + 1, ValueError), (True, TypeError), (4.0, TypeError)):
        with pytest.raises(error, match="`threshold`"):
            bnn.limit_heap_growth(bad)
