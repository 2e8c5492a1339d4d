"""The C heap under XLA's CPU runtime: keeping glibc's malloc from hoarding what long loops free.

On the CPU, a compiled loop of full-batch gradient steps (measured: MCLMC chains, and a bare loop of
their potential's gradient) allocates buffers of the size of the network's activations (rows x hidden
units x chains) outside its preallocated workspace, and frees them, at every step. glibc's malloc serves an allocation above
its *mmap threshold* from a fresh mapping and returns it to the system on free, but it raises that
threshold to the size of every mapped block freed (up to 32 MiB): from the second step on the
buffers come from its heap arenas, which fragment and grow. Measured on UCI protein (41 157 rows, 50
hidden units, 4 MCLMC chains): a process's resident memory rose by about 27 MB per step of a chunk,
to 5.9 GB at the end of a 200-step chunk, and a default MCLMC fit was killed at 20 GB; with the
threshold fixed at 4 MiB, 0.7 GB throughout. glibc reads the same setting from the environment
variable ``MALLOC_MMAP_THRESHOLD_`` at start-up.
"""

from __future__ import annotations

import ctypes
import sys

from bnn import _checks

#: ``M_MMAP_THRESHOLD`` of glibc's ``<malloc.h>``: the ``mallopt`` parameter number
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)
_MAX_THRESHOLD = 32 << 20


def limit_heap_growth(threshold: int = 4 << 20) -> bool:
    """Fix glibc's mmap threshold so that freed large buffers go back to the system at once.

    Call it once, before fitting, in a process that samples or trains full batch on a large
    table on the CPU (``bnn fit`` and ``bnn demo`` call it): without it, resident memory can grow
    by the size of the network's activations at every step of a compiled loop, to tens of GB on
    tables of tens of thousands of rows: glibc raises its threshold to the size of each mapped
    buffer freed, so the next ones come from its heap, which fragments (UCI protein, 41 157 rows, 4
    MCLMC chains: 5.9 GB after 200 steps, a default fit killed at 20 GB; with the threshold fixed,
    0.7 GB). It is a setting of the whole process's C library, so bnn does not change it on import;
    ``MALLOC_MMAP_THRESHOLD_=4194304`` in the environment of a new process does the same.

    The cost: every buffer of at least ``threshold`` bytes is mapped and unmapped anew (page
    faults), which made the steps of a 41 157-row MCLMC chain 15-25 % slower; buffers below it
    (the activations of tables up to ~5 000 rows at 50 hidden units and 4 chains) are not affected.

    Args:
      threshold: bytes from which an allocation gets its own mapping (glibc's default starts at
        128 KiB and rises; at most 32 MiB).

    Returns:
      ``True`` if the C library took the setting; ``False`` where it is not glibc's (macOS,
      Windows, musl), which have no such threshold to fix.
    """
    threshold = _checks.positive_int(threshold, "threshold")
    if threshold > _MAX_THRESHOLD:
        raise ValueError(f"`threshold` must be at most {_MAX_THRESHOLD} bytes (32 MiB, glibc's limit); got {threshold}.")
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
