"""What the benchmark scripts share: timers, the machine description, report writing, and the
hand-written NumPyro reference model of an MLP.

The scripts import it as they import each other (``benchmarks`` is not a package)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

JAX and NumPyro are imported inside the functions that use them, so that a script which only
gathers reports (``results.py``) or only starts other processes (``compile_times.py``) stays light.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# timers


def timed(fn: Callable, *args) -> tuple[Any, float]:
    """``(fn(*args), wall seconds)`` of one call, waiting for the JAX arrays in its result
    (``jax.block_until_ready``; other values are returned as they are)."""
    import jax

    start = time.perf_counter()
    value = jax.block_until_ready(fn(*args))
    return value, time.perf_counter() - start


def median_seconds(fn: Callable, *args, repeats: int = 5, warmup: bool = True) -> float:
    """Median wall seconds of ``fn(*args)`` over ``repeats`` calls (each timed by :func:`timed`),
    after one untimed warm-up call (compilation) unless ``warmup=False``."""
    if warmup:
        timed(fn, *args)
    return statistics.median(timed(fn, *args)[1] for _ in range(repeats))


# ---------------------------------------------------------------------------------------------
# machine description


def json_from_process(command: Sequence[str], env: dict | None = None):
    """Run ``command`` (a fresh Python process, so its compilations and peak memory are its own) and
    return the JSON value printed on the last line of its output; a failure raises with its stderr."""
    done = subprocess.run(list(command), capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lscpu() -> dict[str, str]:
    """``lscpu``'s ``key: value`` lines as a dict (empty where it cannot run)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _cpuinfo_model() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _date() -> str:
    """The output of ``date`` (local time, as the shell prints it), or the ISO time where it cannot run."""
    try:
        text = subprocess.run(["date"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        text = ""
    return text or datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _version(package: str) -> str:
    """The version of ``package``: its ``__version__`` where it is imported, else its installed metadata's."""
    module = sys.modules.get(package)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine(devices: bool = True) -> dict:
    """The machine and software a benchmark runs on, as stored beside its results.

    Keys: ``cpu`` (model name: lscpu, else /proc/cpuinfo, else ``platform.processor()``),
    ``cpus`` (lscpu's CPU count as text, else ``os.cpu_count()``), ``cores_used`` and ``affinity``
    (the cores this process may run on: their number and their comma-separated ids),
    ``xla_flags`` (``$XLA_FLAGS``), ``jax_backend`` and ``device`` (JAX's default backend and
    its first device's kind; None with ``devices=False``, which imports nothing and leaves JAX's
    backends uninitialised), ``platform`` (architecture and system), ``versions`` (bnn, jax,
    numpyro, python) and ``date`` (``date``'s output).
    """
    if devices:
        import jax

        backend, device = jax.default_backend(), jax.devices()[0].device_kind
    else:
        backend = device = None
    cpu = _lscpu()
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = list(range(os.cpu_count() or 1))
    return {
        "cpu": cpu.get("Model name") or _cpuinfo_model() or platform.processor() or "unknown",
        "cpus": cpu.get("CPU(s)", str(os.cpu_count())),
        "cores_used": len(allowed),
        "affinity": ",".join(map(str, allowed)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_backend": backend,
        "device": device,
        "platform": f"{platform.machine()} {platform.system()}",
        "versions": {"bnn": _version("bnn"), "jax": _version("jax"), "numpyro": _version("numpyro"),
                     "python": platform.python_version()},
        "date": _date(),
    }


def machine_line(info: dict) -> str:
    """:func:`machine`'s description as the one line the reports print (without the date)."""
    versions = info.get("versions", {})
    backend = f" ({info['jax_backend']}: {info.get('device')})" if info.get("jax_backend") else ""
    flags = f", `XLA_FLAGS={info['xla_flags']}`" if info.get("xla_flags") else ""
    return (f"{info['cpu']}, {info['cpus']} CPUs, {info['cores_used']} core(s) usable, {info.get('platform', '?')}, "
            f"JAX {versions.get('jax', '?')}{backend}, bnn {versions.get('bnn', '?')}, "
            f"NumPyro {versions.get('numpyro', '?')}, Python {versions.get('python', '?')}{flags}")


# ---------------------------------------------------------------------------------------------
# reports


def kept_sections(path: Path, heading: str) -> str:
    """The text of ``path`` from its first line that starts with ``heading`` on (``""`` where the
    file or such a line is missing): the hand-written sections a rewritten report keeps."""
    path = Path(path)
    if not path.is_file():
        return ""
    text = "\n" + path.read_text(encoding="utf-8")
    at = text.find("\n" + heading)
    return "" if at < 0 else text[at + 1:]


def write_report(path: Path, text: str, keep_from: str | None = None) -> str:
    """Write the Markdown ``text`` to ``path`` (its folder made if needed) and return what was written.

    With ``keep_from`` (a heading such as ``"## "`` or ``"## Notes"``), everything of the existing
    file from its first line starting with ``keep_from`` on follows the generated text after a blank
    line: the generated part is replaced, the hand-written sections stay.
    """
    path = Path(path)
    kept = kept_sections(path, keep_from) if keep_from is not None else ""
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------------------------
# the hand-written NumPyro reference model

#: hidden-layer activations of the reference network
ACTIVATIONS = ("tanh", "relu")


def layer_shapes(num_features: int, widths: Sequence[int]) -> list[tuple[tuple[int, int], tuple[int]]]:
    """``[(kernel shape, bias shape), ...]`` of an MLP with ``num_features`` inputs and layers ``widths``."""
    sizes = (num_features, *widths)
    return [((a, b), (b,)) for a, b in zip(sizes[:-1], sizes[1:])]


def mlp(weights: Sequence, x, activation: str = "tanh"):
    """The network ``weights = [(kernel, bias), ...]`` at inputs ``x``: ``activation`` on hidden layers,
    a linear output."""
    import jax
    import jax.numpy as jnp

    act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w + jnp.reshape(b, (1,) * (jnp.ndim(h) - 1) + jnp.shape(b))  # the bias on every row, ranks explicit
        if i < len(weights) - 1:
            h = act(h)
    return h


def layer_weights(values: dict, num_layers: int) -> list:
    """``[(kernel, bias), ...]`` from the sites of :func:`mlp_model` (``"Dense_0.kernel"``, ...)."""
    return [(values[f"Dense_{i}.kernel"], values[f"Dense_{i}.bias"]) for i in range(num_layers)]


def mlp_model(widths: Sequence[int], activation: str = "tanh", prior_scale: float = 1.0,
              noise: float | None = None) -> Callable:
    """A NumPyro model ``model(x, y=None)`` of an MLP written out by hand: the reference of the benchmarks.

    Layers ``widths`` (the last is the output width) on ``x.shape[-1]`` inputs; ``activation``
    (``"tanh"`` or ``"relu"``) on hidden layers, a linear output; ``Normal(0, prior_scale)`` on
    every weight and bias, sites named as bnn names them (``"Dense_0.kernel"``, ``"Dense_0.bias"``,
    ...); Gaussian observations ``y`` (rows × output width) with scale ``noise``, or, with
    ``noise=None``, a scale ``"noise_scale"`` learned under a ``HalfNormal(1)`` prior.
    """
    import numpyro
    import numpyro.distributions as dist

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}.")
    widths = tuple(widths)

    def model(x, y=None):
        weights = []
        for i, (kernel_shape, bias_shape) in enumerate(layer_shapes(x.shape[-1], widths)):
            prior = dist.Normal(0.0, prior_scale)
            kernel = numpyro.sample(f"Dense_{i}.kernel", prior.expand(kernel_shape).to_event(2))
            bias = numpyro.sample(f"Dense_{i}.bias", prior.expand(bias_shape).to_event(1))
            weights.append((kernel, bias))
        scale = noise if noise is not None else numpyro.sample("noise_scale", dist.HalfNormal(1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Normal(mlp(weights, x, activation), scale).to_event(1), obs=y)

    return model
