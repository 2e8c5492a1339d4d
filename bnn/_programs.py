"""Compiled programs cached per model content, under keys derived from what built them.

A program is built by a module-level function ``build(model, **settings)``; it is cached
under ``(build, settings, float type)`` (:class:`Programs`). A builder sees nothing but the
model and its keyword settings, so every setting that shapes a program is part of its key by
construction: a forgotten setting cannot silently reuse a wrong program, and a closure
(which could capture values the key does not hold) is refused as a builder.

Settings are compared by value (:func:`settings_key`), optax transformations included:
every call of ``optax.adam(1e-3)`` returns a new object with fresh closures, and keying
on the object would recompile each ``fit(optimizer=optax.adam(1e-3))``.

Models are compared by value too: every model built from equal parts (module, prior,
likelihood, precision; :func:`for_model`) shares one store, so building the same model again
(a notebook cell run twice, a script fitting a fresh model per split) compiles nothing new.
The :data:`MAX_MODELS` most recently built distinct models keep their stores (a module's
initialisers, shared by every model of that module, have a store of their own among them).
"""

from __future__ import annotations

import collections
import functools
import types
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bnn import _checks

_PLAIN = (bool, int, float, complex, str, bytes)


class Programs:
    """The compiled programs of one model: ``programs.get(build, model, **settings)``."""

    def __init__(self) -> None:
        self._store: dict[Any, Any] = {}

    def get(self, build: Callable[..., Any], model, /, **settings) -> Any:
        """``build(model, **settings)``, built once per builder, settings and float type."""
        if not callable(build) or "<locals>" in getattr(build, "__qualname__", "<locals>"):
            raise TypeError(f"a program builder must be a module-level function of (model, **settings); got {build!r}.")
        key = (f"{build.__module__}.{build.__qualname__}", tuple(sorted((k, settings_key(v)) for k, v in settings.items())),
               _checks.float_dtype())
        if key not in self._store:
            self._store[key] = build(model, **settings)
        return self._store[key]

    def built_by(self, build: Callable[..., Any]) -> list[Any]:
        """The programs built so far by ``build`` (for tests and introspection)."""
        name = f"{build.__module__}.{build.__qualname__}"
        return [program for key, program in self._store.items() if key[0] == name]

    def __len__(self) -> int:
        return len(self._store)


#: how many distinct models keep their compiled programs (the least recently built are dropped)
MAX_MODELS = 64
_STORES: collections.OrderedDict[Any, Programs] = collections.OrderedDict()


def for_model(content) -> Programs:
    """The program store shared by every model whose parts are ``content`` (a hashable value).

    ``None`` (parts that cannot be compared by value, e.g. a flax.nnx module) gives a store of
    the model's own.
    """
    if content is None:
        return Programs()
    store = _STORES.pop(content, None)
    _STORES[content] = store = Programs() if store is None else store
    while len(_STORES) > MAX_MODELS:
        _STORES.popitem(last=False)
    return store


def clear() -> None:
    """Forget every shared store: models built afterwards compile their programs afresh."""
    _STORES.clear()


class _Identity:
    """A cache-key part that equals only the object it wraps (for values that cannot be compared by content)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


#: arrays larger than this are compared by identity, not content, in :func:`settings_key`.
_MAX_KEY_ARRAY = 4096
#: nesting depth beyond which :func:`settings_key` compares by identity.
_MAX_KEY_DEPTH = 64


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the functions defined inside it) may read from its module globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _shallow_key(value):
    """A module global read by an optimiser's code: scalars by value, everything else by identity."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (type(value).__name__, value)
    return _Identity(value)


def _content_key(obj, depth: int = 0):
    """A hashable key that is equal for objects built the same way (see :func:`settings_key`)."""
    if depth > _MAX_KEY_DEPTH:
        return _Identity(obj)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, type, np.dtype)):
        return (type(obj), obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        try:
            if np.size(obj) > _MAX_KEY_ARRAY:
                return _Identity(obj)
            a = np.asarray(obj)
        except Exception:  # a tracer, or an array not readable on the host
            return _Identity(obj)
        return ("array", type(obj), a.dtype, a.shape, a.tobytes())
    if isinstance(obj, (tuple, list)):  # NamedTuples (optax's GradientTransformation) keep their type
        return (type(obj), tuple(_content_key(v, depth + 1) for v in obj))
    if isinstance(obj, dict):
        return (type(obj), tuple((_content_key(k, depth + 1), _content_key(v, depth + 1)) for k, v in obj.items()))
    if isinstance(obj, functools.partial):
        return ("partial", _content_key(obj.func, depth + 1), _content_key(obj.args, depth + 1),
                _content_key(obj.keywords, depth + 1))
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        try:
            cells = tuple(c.cell_contents for c in obj.__closure__ or ())
        except ValueError:  # an empty cell: a closure still being built
            return _Identity(obj)
        module_globals = obj.__globals__
        read = tuple(sorted((name, _shallow_key(module_globals[name])) for name in _global_names(code) if name in module_globals))
        return ("function", obj.__module__, obj.__qualname__, code, _content_key(obj.__defaults__, depth + 1),
                _content_key(obj.__kwdefaults__, depth + 1), _content_key(cells, depth + 1), read)
    return _Identity(obj)


#: the key computed for each optimiser object the first time it was seen (at most _MAX_KEYS, oldest dropped)
_KEYS: dict = {}
_MAX_KEYS = 256


def settings_key(value) -> Any:
    """A hashable key of one setting: equal for values (optax transformations included) built the same way.

    Every call of ``optax.adam(1e-3)`` returns a new object (fresh closures), so keying the
    compiled programs on the object itself recompiles every ``fit(optimizer=optax.adam(1e-3))``.
    This key compares the transformation's functions by their code, the values they close
    over (numbers, small arrays, nested functions and transformations, recursively) and the
    module globals they read (scalars by value, modules, functions and other objects by
    identity). Anything else (large arrays, arbitrary objects) is compared by identity, so
    objects that cannot be told apart by content never share a program.

    An object keeps the key it got when first seen: some optax closures rewrite their own
    captured values when first called (a schedule turns its integer step count into a float),
    which would otherwise give a used optimiser another key than a fresh one.
    """
    if value is None or isinstance(value, _PLAIN):
        return _content_key(value)
    try:
        return _KEYS[value]
    except KeyError:
        pass
    except TypeError:  # unhashable: nothing to remember it by
        return _content_key(value)
    key = _content_key(value)
    if len(_KEYS) >= _MAX_KEYS:
        del _KEYS[next(iter(_KEYS))]
    _KEYS[value] = key
    return key


