"""Flax NNX modules behind the linen ``init`` / ``apply`` interface the lifting uses.

:class:`NNXModule` wraps a ``flax.nnx.Module`` *instance* so that it looks like a linen
module to :class:`bnn.lifting.LiftedModel`: ``init(key, x)`` returns variables
``{"params": nested dict}`` and ``apply(variables, x)`` runs the network on them (through
``nnx.split`` / ``nnx.merge``, so the wrapped instance is never modified). Everything
downstream — priors, every inference method, predictions, saving — then works unchanged.

Parameter paths are the dotted attribute paths of the module's ``nnx.Param`` variables,
integer keys (of an ``nnx.List``) written as strings: ``"linear1.kernel"``,
``"layers.0.bias"``. Only ``nnx.Param`` state can be lifted; a module holding anything
else (``BatchNorm`` statistics, ``Dropout``'s stored ``Rngs``, …) is refused with the
paths and types found.

Seeds. A linen module re-runs its initialisers for every key; an NNX instance holds
*one* set of constructed weights, and flax 0.12 keeps no initialiser on its ``nnx.Param``
variables. ``init(key, x)`` therefore draws parameter number ``i`` (in path order) with
``key_i = fold_in(key, i)`` by this rule:

1. if the ``nnx.Param`` carries an initialiser in its metadata under ``"initializer"``
   (``nnx.Param(value, initializer=fn)``, or ``nnx.Linear(..., kernel_metadata={"initializer": fn})``),
   the start is ``fn(key_i, shape, dtype)`` — the module's own rule, exactly as linen does;
2. otherwise the constructed array stands for its initialiser: an array whose entries
   are all equal (zero biases, unit scales) is a constant initialisation and every key
   starts there; any other array is read as one draw of a zero-mean initialiser and is
   redrawn i.i.d. ``Normal(0, r²)`` with ``r`` the root-mean-square of its constructed
   entries (for ``lecun_normal`` kernels ``r² ≈ 1 / fan_in``, that initialiser's own
   variance). A one-entry array counts as constant only when it is zero (one number
   cannot show that it is constant; a one-input, one-output kernel must still differ
   between ensemble members).

So different seeds give different starts, the same seed the same start, and the scale of
every start is that of the module's construction. To start from the constructed weights
themselves, pass ``init_params=model.module.variables`` to ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from bnn import _checks

#: Metadata key of an ``nnx.Param`` that holds its initialiser ``(key, shape, dtype) -> array``.
INITIALIZER = "initializer"


def _dotted(path: tuple) -> str:
    parts = [str(p) for p in path]
    bad = [p for p in parts if "." in p or "/" in p or not p]
    if bad:
        raise ValueError(
            f"NNX parameter path {path!r} has key(s) {bad} that are empty or contain '.' or '/'; "
            "parameter sites are named by dotted paths, so keys must not."
        )
    return ".".join(parts)


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class NNXModule:
    """A ``flax.nnx.Module`` instance with the linen interface ``init`` / ``apply``.

    Args:
      module: the NNX module; it maps inputs ``(n, features)`` to outputs ``(n, width)``
        and holds only ``nnx.Param`` state.

    Attributes:
      module: the wrapped NNX module (never modified).
      class_name: ``"package.module.ClassName"`` of the wrapped module.
      paths: dotted parameter paths, sorted as NNX sorts its state.
      variables: the constructed weights as ``{"params": nested dict}`` (string keys).

    Raises:
      TypeError: ``module`` is not an ``nnx.Module``.
      ValueError: the module holds state other than ``nnx.Param`` (the message lists it), or
        a path key contains ``'.'`` or ``'/'``.
    """

    def __init__(self, module: nnx.Module):
        if not isinstance(module, nnx.Module):
            raise TypeError(f"`module` must be a flax.nnx.Module instance; got {type(module).__name__}.")
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
        other = [(_dotted(p), type(v).__name__) for p, v in nnx.to_flat_state(rest)]
        if other:
            found = ", ".join(f"{p} ({t})" for p, t in other)
            raise ValueError(
                f"the NNX module {type(module).__name__} holds state other than nnx.Param, which cannot be "
                f"lifted: {found}. Only modules whose state is all nnx.Param (no BatchNorm statistics, no "
                "stored Rngs for dropout, ...) can be lifted."
            )
        flat = list(nnx.to_flat_state(params))
        if not flat:
            raise ValueError(f"the NNX module {type(module).__name__} has no nnx.Param to put a prior on.")
        self.module = module
        self.class_name = _class_name(module)
        self._graphdef = graphdef
        self._template = params
        self._nnx_paths = {_dotted(p): tuple(p) for p, _ in flat}
        self.paths = tuple(self._nnx_paths)
        self._values = {_dotted(p): jnp.asarray(v.get_value()) for p, v in flat}
        self._initializers: dict[str, Callable | None] = {
            _dotted(p): v.get_metadata().get(INITIALIZER) for p, v in flat
        }
        self._scales = {path: self._redraw_scale(np.asarray(value)) for path, value in self._values.items()}
        self._widths: dict[int, None] = {}

    @staticmethod
    def _redraw_scale(value: np.ndarray) -> float | None:
        """``None`` for a constant array (kept for every key), else its root-mean-square."""
        if value.size == 0:
            return None
        first = value.reshape(-1)[0]
        if np.all(value == first) and (value.size > 1 or first == 0):
            return None
        return float(np.sqrt(np.mean(np.square(value.astype(np.float64)))))

    def __repr__(self) -> str:
        return f"NNXModule({type(self.module).__name__})"

    @property
    def variables(self) -> dict:
        """The constructed weights, ``{"params": nested dict}``; a valid ``init_params`` for ``fit``."""
        return {"params": traverse_util.unflatten_dict(dict(self._values), sep=".")}

    def init(self, key: jax.Array, x: jax.Array) -> dict:
        """Starting variables ``{"params": ...}`` for ``key`` (see the module docs for the rule).

        Args:
          key: a JAX key; traceable, so ``jax.vmap`` over keys gives several starts.
          x: example inputs ``(n, features)``; only their width is used (checked).
        """
        self.check_width(int(x.shape[-1]))
        flat = {}
        for i, path in enumerate(self.paths):
            value = self._values[path]
            key_i = jax.random.fold_in(key, i)
            initializer, scale = self._initializers[path], self._scales[path]
            if initializer is not None:
                new = jnp.asarray(initializer(key_i, value.shape, value.dtype))
                if new.shape != value.shape:
                    raise ValueError(
                        f"the initializer in the metadata of NNX parameter {path!r} returned shape {new.shape}; "
                        f"the parameter has shape {value.shape}."
                    )
            elif scale is None:
                new = value
            else:
                new = scale * jax.random.normal(key_i, value.shape, value.dtype)
            flat[path] = new.astype(value.dtype)
        return {"params": traverse_util.unflatten_dict(flat, sep=".")}

    def merge(self, variables: Mapping) -> nnx.Module:
        """A new NNX module of the wrapped class holding ``variables`` ``{"params": ...}``.

        E.g. ``model.module.merge(fit.params)`` is the MAP network as an ``nnx.Module``.
        """
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise TypeError(f"`variables` must be a dict {{'params': ...}}; got {type(variables).__name__}.")
        flat = traverse_util.flatten_dict(dict(variables["params"]), sep=".")
        missing = sorted(set(self.paths) - set(flat))
        if missing:
            raise ValueError(f"`variables` lacks the NNX parameter(s) {missing}; it has {sorted(flat)}.")
        by_nnx_path = {self._nnx_paths[p]: flat[p] for p in self.paths}
        state = nnx.map_state(lambda path, var: var.replace(by_nnx_path[tuple(path)]), self._template)
        return nnx.merge(self._graphdef, state)

    def apply(self, variables: Mapping, x: jax.Array) -> jax.Array:
        """The NNX module's output ``(n, width)`` for ``variables`` ``{"params": ...}`` at inputs ``x`` ``(n, features)``."""
        out: jax.Array = self.merge(variables)(x)
        return out

    # --- input width ---------------------------------------------------------------

    def _accepts(self, width: int) -> Exception | None:
        dummy = jax.ShapeDtypeStruct((1, width), _checks.float_dtype())
        try:
            jax.eval_shape(self.apply, self.variables, dummy)
        except Exception as err:  # noqa: BLE001 - any failure means the width does not fit
            return err
        return None

    def check_width(self, width: int) -> None:
        """Raise a ``ValueError`` naming the expected width if inputs of ``width`` columns do not fit.

        NNX layers fix their input width at construction; the widths offered in the message
        are the ``in_features`` declared by the module's layers that the module accepts.
        """
        if width in self._widths:
            return
        err = self._accepts(width)
        if err is None:
            self._widths[width] = None
            return
        declared = sorted({w for _, m in nnx.iter_modules(self.module)
                           if isinstance(w := getattr(m, "in_features", None), int)})
        accepted = [w for w in declared if w != width and self._accepts(w) is None]
        if not accepted:
            raise err
        expected = accepted[0] if len(accepted) == 1 else f"one of {accepted}"
        raise ValueError(
            f"`x` has {width} feature column(s), but the NNX module {type(self.module).__name__} takes inputs "
            f"of width {expected} (found among its layers' in_features)."
        ) from None
