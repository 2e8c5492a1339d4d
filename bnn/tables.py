"""A user's CSV table as model inputs: column checks with errors that say what to fix.

Used by ``bnn fit`` and ``bnn predict``. Every problem raises :class:`TableError` with one
line naming the file, the column(s) or the row(s) (1-based data rows, the header is row 0),
which the command prints instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

#: the fewest training rows ``bnn fit`` accepts
MIN_ROWS = 5
#: the file in a fit folder that records which columns the fit was made from
COLUMNS_FILE = "columns.json"


class TableError(ValueError):
    """A problem with a user's table, stated in one line."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """The columns a fit was made from: ``features`` (inputs, in order), ``target`` and ``likelihood``;
    ``classes``: the class names of a target column of text (class ``k`` is ``classes[k]``), else None."""

    features: tuple[str, ...]
    target: str
    likelihood: str
    classes: tuple[str, ...] | None = None

    def save(self, folder: Path) -> None:
        (folder / COLUMNS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Columns:
        path = folder / COLUMNS_FILE
        if not path.is_file():
            raise TableError(f"{str(folder)!r} was not written by `bnn fit` (no {COLUMNS_FILE}).")
        raw = json.loads(path.read_text())
        classes = raw.get("classes")
        return cls(tuple(raw["features"]), raw["target"], raw["likelihood"], None if classes is None else tuple(classes))


def _names(items) -> str:
    return ", ".join(repr(str(c)) for c in items)


def read_table(path, columns: list[str] | None = None, labels: str | None = None, drop_missing: bool = False,
               exclude: list[str] | None = None):
    """Read a CSV file with a header row into a pandas DataFrame, checking the ``columns`` it needs
    (default: every column but those in ``exclude``).

    Columns must exist, be numeric (``labels``, a class column, may hold text) and have no empty
    cells (errors give the row numbers); with ``drop_missing`` rows with an empty cell are dropped
    instead, and ``frame.attrs["dropped_rows"]`` counts them.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise TableError(f"{str(path)!r} does not exist.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TableError(f"{str(path)!r} is not a readable CSV file with a header row: {err}".splitlines()[0]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    unknown = [c for c in exclude or [] if c not in frame.columns]
    if unknown:
        raise TableError(f"`--drop`: {str(path)!r} has no column {_names(unknown)}; its columns are {_names(frame.columns)}.")
    wanted = [c for c in frame.columns if c not in (exclude or [])] if columns is None else columns
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise TableError(f"{str(path)!r} has no column {_names(missing)}; its columns are {_names(frame.columns)}.")
    frame = frame[wanted]
    text = [c for c in wanted if c != labels and not pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]
    if text:
        raise TableError(f"{str(path)!r}: column(s) {_names(text)} hold text; bnn's inputs are numeric: leave them out "
                         f"with `--drop {','.join(map(str, text))}` or choose the inputs with `--features` (a class "
                         "column of text is a target: `--likelihood categorical` or `bernoulli`).")
    empty = frame.isna().any(axis=1).to_numpy()
    frame.attrs["dropped_rows"] = 0
    if empty.any() and drop_missing:
        frame = frame[~empty].reset_index(drop=True)
        frame.attrs["dropped_rows"] = int(empty.sum())
    elif empty.any():
        rows = np.flatnonzero(empty) + 1
        shown = ", ".join(str(r) for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        cols = [c for c in wanted if frame[c].isna().any()]
        raise TableError(f"{str(path)!r} has empty or non-numeric cells in column(s) {_names(cols)} at data row(s) {shown} "
                         "(`bnn fit --drop-missing` leaves such rows out of a fit).")
    return frame


def training_arrays(frame, target: str, features: list[str] | None, likelihood: str, path) -> tuple:
    """``(x, y, features, classes)`` for fitting: float32 inputs, targets shaped for the likelihood, and
    the class names of a class column of text (its classes sorted, coded 0, 1, ...; else None)."""
    features = [c for c in frame.columns if c != target] if not features else features
    if target in features:
        raise TableError(f"the target {target!r} is also listed among the features.")
    if not features:
        raise TableError(f"{str(path)!r} has no feature column besides the target {target!r}.")
    if len(frame) < MIN_ROWS:
        raise TableError(f"{str(path)!r} has {len(frame)} data row(s); fitting needs at least {MIN_ROWS}.")
    x = frame[features].to_numpy(np.float32)
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(frame[target]):  # a class column (read_table let it through)
        classes, codes = np.unique(frame[target].astype(str).to_numpy(), return_inverse=True)
        if len(classes) < 2 or (likelihood == "bernoulli" and len(classes) != 2):
            expected = "exactly 2 classes for --likelihood bernoulli" if likelihood == "bernoulli" else "at least 2 classes"
            raise TableError(f"target {target!r} must hold {expected}; it holds {len(classes)}: {_names(classes[:10])}.")
        return x, codes.astype(np.int32), features, tuple(str(c) for c in classes)
    y = frame[target].to_numpy(np.float64)
    if likelihood in ("bernoulli", "categorical"):
        if not np.all(y == np.round(y)) or y.min() < 0 or (likelihood == "bernoulli" and y.max() > 1):
            expected = "0 or 1" if likelihood == "bernoulli" else "integer class labels 0, 1, 2, ..."
            raise TableError(f"target {target!r} must hold {expected} for --likelihood {likelihood}.")
        return x, y.astype(np.int32), features, None
    return x, y.astype(np.float32)[:, None], features, None
