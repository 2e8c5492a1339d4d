"""Saving and loading fits in a portable, inspectable folder (no pickled code).

Layout of a saved fit::

    fit_dir/
      spec.json    format and version, method, input width, the network (MLP or
                   Polynomial by its fields; any other linen or NNX module as
                   ``{"type": "custom", "framework": "linen" | "nnx", "class": ...}``),
                   prior, likelihood, JSON-able entries of ``fit.info``, and the
                   SHA-256 of arrays.npz
      arrays.npz   draws/<site>            (num_draws, *shape) every latent site
                   linearize_at/<path>     Laplace's linearisation point (if any)
                   normalizer/<field>      training statistics (if normalize=True)
                   data/x, data/y          the training data (original units)
                   y_err                   known noise scales of the training data (if any)
                   info/<key>[/<field>]    array-valued info (loss trace, sample stats, ...)

A loaded fit predicts identically to the one saved. A missing, truncated, altered or
mismatched folder raises with the path and what is wrong. No code is pickled, so a custom
network cannot be rebuilt from the folder: the caller builds it again and passes it to
``bnn.load(path, module=...)``, which checks its parameter paths and shapes against the
saved draws.

This module knows the format only: :func:`save` writes any fit, :func:`read` returns the
parts of a saved one (:class:`SavedFit`); :func:`bnn.load` (in :mod:`bnn.model`) rebuilds
the model and its :class:`bnn.Fit` from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnn._version import __version__
from bnn.lifting import LiftedModel
from bnn.likelihoods import Likelihood, likelihood_from_dict
from bnn.nets import MLP, Polynomial
from bnn.nnx_bridge import NNXModule
from bnn.predictive import Normalizer
from bnn.priors import Prior, PriorSpec, prior_from_dict

if TYPE_CHECKING:  # pragma: no cover - annotations only: a Fit calls into this module
    from bnn.fit import Fit

FORMAT = "bnn-fit"
VERSION = 1
SPEC, ARRAYS = "spec.json", "arrays.npz"


def _custom_spec(module) -> dict:
    """A network the spec cannot rebuild: its framework and class, so ``load`` can check the one passed."""
    if isinstance(module, NNXModule):
        return {"type": "custom", "framework": "nnx", "class": module.class_name}
    cls = type(module)
    return {"type": "custom", "framework": "linen", "class": f"{cls.__module__}.{cls.__qualname__}"}


def _network_spec(module) -> dict:
    if type(module) is MLP and isinstance(module.activation, str):
        defaults = MLP.__dataclass_fields__
        custom = (module.kernel_init is not defaults["kernel_init"].default
                  or module.bias_init is not defaults["bias_init"].default)
        return {"type": "MLP", "features": list(module.features), "activation": module.activation,
                "custom_initializers": bool(custom)}
    if type(module) is Polynomial:
        return {"type": "Polynomial", "degree": int(module.degree), "outputs": int(module.outputs)}
    return _custom_spec(module)


def _network(spec: dict, module=None, path: Path | None = None):
    """The network of a saved ``spec``; ``module`` (if given) replaces it and is checked by the caller."""
    kind = spec.get("type")
    if module is not None:
        return module
    if kind == "MLP":
        if spec.get("custom_initializers"):
            warnings.warn(
                "this MLP was saved with custom initialisers, which are not stored; the loaded network uses "
                "the defaults (predictions are unaffected; new MLE/MAP fits start differently).",
                UserWarning,
                stacklevel=3,
            )
        return MLP(features=tuple(spec["features"]), activation=spec["activation"])
    if kind == "Polynomial":
        return Polynomial(degree=spec["degree"], outputs=spec["outputs"])
    if kind == "custom":
        raise ValueError(
            f"the fit in {str(path)!r} was saved from a custom {spec.get('framework')} network "
            f"{spec.get('class')!r}, which a saved fit cannot rebuild (no code is pickled): build that "
            "network again and pass it, bnn.load(path, module=network)."
        )
    raise ValueError(f"unknown network type {kind!r} in the saved spec.")


def _prior_spec(prior) -> dict:
    if isinstance(prior, Prior):
        return {"single": prior.to_dict()}
    return {"by_path": {k: v.to_dict() for k, v in prior.items()}}


def _prior(spec: dict):
    if "single" in spec:
        return prior_from_dict(spec["single"])
    return {k: prior_from_dict(v) for k, v in spec["by_path"].items()}


def _json_value(value):
    """``value`` if it is JSON-able plain data (after tuple -> list), else ``None``."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, (str, int, float)) for v in value):
        return list(value)
    return None


def _split_info(info: dict) -> tuple[dict, dict]:
    """``fit.info`` -> (JSON scalars, ``{npz key: array}``); nested fits and other objects are dropped."""
    scalars, arrays = {}, {}
    for key, value in info.items():
        if isinstance(value, dict):
            for sub, arr in value.items():
                if isinstance(arr, (np.ndarray, jnp.ndarray)):
                    arrays[f"info/{key}/{sub}"] = np.asarray(arr)
        elif isinstance(value, (np.ndarray, jnp.ndarray)):
            arrays[f"info/{key}"] = np.asarray(value)
        elif (converted := _json_value(value)) is not None:
            scalars[key] = converted
    return scalars, arrays


def _join_info(scalars: dict, arrays: dict) -> dict:
    info = dict(scalars)
    if "subset" in info:
        info["subset"] = tuple(info["subset"])
    for key, arr in arrays.items():
        parts = key.split("/")[1:]
        if len(parts) == 1:
            info[parts[0]] = arr
        else:
            info.setdefault(parts[0], {})[parts[1]] = arr
    return info


def save(fit: Fit, path, overwrite: bool = False) -> Path:
    """Write ``fit`` to the folder ``path`` (see the module docs for the layout).

    The files are written into a new folder beside ``path``, which then replaces ``path`` by
    renames: a save that is interrupted (a killed process, a full disk) leaves the previous
    contents of ``path`` as they were, and a half-written fit is never found at ``path``.

    Raises:
      FileExistsError: ``path`` exists and is not empty, unless ``overwrite=True``; with
        ``overwrite=True``, ``path`` holds files other than a saved fit's (they would be lost).
    """
    if not all(hasattr(fit, a) for a in ("model", "draws", "method", "info")):
        raise TypeError(f"`fit` must be a bnn.Fit; got {type(fit).__name__}.")
    path = Path(path)
    _check_target(path, overwrite)
    with replacing(path) as folder:
        write(fit, folder)
    return path


def write(fit: Fit, folder: Path) -> None:
    """Write the files of ``fit`` into the existing folder ``folder``: arrays.npz, then spec.json."""
    model = fit.model
    arrays = {f"draws/{k}": np.asarray(v) for k, v in fit.draws.items()}
    if fit.linearize_at is not None:
        arrays.update({f"linearize_at/{k}": np.asarray(v) for k, v in fit.linearize_at.items()})
    if fit.normalizer is not None:
        arrays.update({f"normalizer/{k}": np.asarray(v) for k, v in fit.normalizer._asdict().items() if v is not None})
    if fit.data is not None:
        arrays.update({"data/x": np.asarray(fit.data[0]), "data/y": np.asarray(fit.data[1])})
    if fit.y_err is not None:
        arrays["y_err"] = np.asarray(fit.y_err)
    scalars, info_arrays = _split_info(fit.info)
    arrays.update(info_arrays)
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    payload = buffer.getvalue()
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "bnn_version": __version__,
        "method": fit.method,
        "num_features": fit.num_features,
        "network": _network_spec(model.module),
        "prior": _prior_spec(model.prior),
        "likelihood": model.likelihood.to_dict(),
        "matmul_precision": model.matmul_precision,
        "info": scalars,
        "arrays_sha256": hashlib.sha256(payload).hexdigest(),
    }
    _write_durably(folder / ARRAYS, payload)
    _write_spec(folder / SPEC, spec)


@contextlib.contextmanager
def replacing(path: Path):
    """Yield a new empty folder beside ``path`` that replaces ``path`` once the block succeeds.

    What the block writes appears at ``path`` only complete: if it raises (or the process
    dies), ``path`` keeps its previous contents and the staging folder is removed (or, after
    a kill, left as a hidden ``.<name>.saving-*`` folder beside it). The swap itself is two
    renames; a kill between them leaves the previous contents in a hidden
    ``.<name>.replaced-*`` folder beside ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # a folder as mkdir would make it, not mkdtemp's private 0o700
    try:
        yield staging
        _swap_in(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse a target that holds anything a save would lose (see :func:`save`)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file, not a folder for a saved fit.")
    entries = {entry.name for entry in path.iterdir()}
    if entries and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists and is not empty; pass overwrite=True to replace its fit.")
    others = sorted(entries - {ARRAYS, SPEC})
    if others:
        raise FileExistsError(
            f"{str(path)!r} holds files other than a saved fit ({', '.join(others[:5])}"
            f"{', ...' if len(others) > 5 else ''}); a save replaces the whole folder, so give a new or empty one."
        )


def _write_durably(file: Path, data: bytes) -> None:
    with open(file, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_spec(file: Path, spec: dict) -> None:
    """Write spec.json, the last file of a save (a reader checks the arrays against its checksum)."""
    _write_durably(file, json.dumps(spec, indent=2).encode())


def _swap_in(staging: Path, path: Path) -> None:
    """Put the complete folder ``staging`` at ``path``; an existing ``path`` is restored if that fails."""
    if not path.exists():
        os.rename(staging, path)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-", dir=path.parent))
    os.rmdir(retired)  # a free name beside `path`, on the same file system
    os.rename(path, retired)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(retired, path)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _read_spec(path: Path) -> dict:
    spec_path = path / SPEC
    if not spec_path.is_file():
        raise FileNotFoundError(f"{str(spec_path)!r} is missing: {str(path)!r} is not a saved bnn fit.")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(spec_path)!r} is not valid JSON ({err}); the saved fit is corrupt.") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else None
        raise ValueError(f"{str(spec_path)!r} is not a bnn fit spec (format {found!r}).")
    if spec.get("version") != VERSION:
        raise ValueError(f"{str(spec_path)!r} has format version {spec.get('version')!r}; this bnn reads version {VERSION}.")
    return spec


def _read_arrays(path: Path, checksum: str) -> dict[str, np.ndarray]:
    arrays_path = path / ARRAYS
    if not arrays_path.is_file():
        raise FileNotFoundError(f"{str(arrays_path)!r} is missing: the saved fit is incomplete.")
    payload = arrays_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != checksum:
        raise ValueError(f"{str(arrays_path)!r} is corrupt: its SHA-256 does not match spec.json (truncated or altered).")
    try:
        with np.load(_io.BytesIO(payload), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:  # pragma: no cover - the checksum catches these first
        raise ValueError(f"{str(arrays_path)!r} is corrupt ({err}).") from None


class SavedFit(NamedTuple):
    """The parts of a saved fit, as :func:`read` returns them.

    ``module``, ``prior``, ``likelihood`` and ``matmul_precision`` rebuild the model;
    the rest are the :class:`bnn.Fit` fields of the same names (``draws`` as
    ``{site: (num_draws, *shape)}``).
    """

    module: nn.Module | nnx.Module | NNXModule
    prior: PriorSpec
    likelihood: Likelihood
    matmul_precision: str
    method: str
    num_features: int
    draws: dict
    info: dict
    linearize_at: dict | None
    normalizer: Normalizer | None
    data: tuple | None
    y_err: np.ndarray | None


def read(path, module=None) -> SavedFit:
    """Read the parts of a fit written by :func:`save` (``bnn.load`` builds the fit from them).

    Args:
      path: the folder.
      module: the network (a ``flax.linen.Module`` or ``flax.nnx.Module``), required when the
        spec names a custom one, optional otherwise; it replaces the saved description and
        must have the saved parameter paths and shapes.

    Raises:
      FileNotFoundError: the folder, spec.json or arrays.npz is missing.
      ValueError: a corrupt file (invalid JSON, checksum mismatch), an unknown format
        version, a custom network without ``module``, or draws whose shapes do not match
        the (rebuilt or given) network ("mismatched").
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a folder holding a saved bnn fit.")
    spec = _read_spec(path)
    arrays = _read_arrays(path, spec.get("arrays_sha256", ""))
    given = module
    module = _network(spec["network"], module, path)
    prior, likelihood = _prior(spec["prior"]), likelihood_from_dict(spec["likelihood"])
    num_features = int(spec["num_features"])
    try:
        paths_shapes, latent = _expected_sites(module, prior, likelihood, num_features)
    except ValueError as err:
        if given is None:
            raise
        raise ValueError(
            f"the given `module` is mismatched with the fit in {str(path)!r} (saved with {num_features} input "
            f"feature(s) and a {spec['network'].get('type')} network): {err}"
        ) from None

    def group(prefix: str) -> dict:
        return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}

    draws = {k: jnp.asarray(v) for k, v in group("draws").items()}
    wrong = {k: (tuple(draws[k].shape[1:]) if k in draws else None, s) for k, s in paths_shapes.items()
             if k not in draws or tuple(draws[k].shape[1:]) != s}
    extra = set(draws) - set(latent)
    network = "saved" if given is None else "given"
    if wrong or extra or set(latent) - set(draws):
        raise ValueError(
            f"the draws in {str(path / ARRAYS)!r} are mismatched with the {network} network: (saved, expected) shapes "
            f"{wrong}, unexpected sites {sorted(extra)}."
        )
    linearize = group("linearize_at")
    norm = group("normalizer")
    data = group("data")
    return SavedFit(
        module=module,
        prior=prior,
        likelihood=likelihood,
        matmul_precision=spec.get("matmul_precision", "highest"),
        method=spec["method"],
        num_features=num_features,
        draws={k: draws[k] for k in latent},
        info=_join_info(spec.get("info", {}), {k: v for k, v in arrays.items() if k.startswith("info/")}),
        linearize_at={k: jnp.asarray(v) for k, v in linearize.items()} or None,
        normalizer=Normalizer(**norm) if norm else None,
        data=(data["x"], data["y"]) if data else None,
        y_err=arrays.get("y_err"),
    )


def _expected_sites(module, prior: PriorSpec, likelihood: Likelihood,
                    num_features: int) -> tuple[dict, tuple[str, ...]]:
    """``({path: shape}, latent site names)`` of the saved network."""
    lifted = LiftedModel(module, prior=prior, likelihood=likelihood)
    spec = lifted.spec(num_features)
    return dict(zip(spec.paths, spec.shapes)), lifted.latent_sites(num_features)
