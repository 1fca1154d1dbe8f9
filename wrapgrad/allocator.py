"""Keep freed tensor memory in the process: glibc ``malloc`` tuned for the ``wrapgrad`` command.

What: :func:`keep_freed_memory` sets three glibc ``mallopt`` parameters through ``ctypes``,

* ``M_MMAP_THRESHOLD`` (:data:`MMAP_THRESHOLD`, 1 GiB): blocks below it come from the heap
  instead of a fresh ``mmap`` each;
* ``M_TRIM_THRESHOLD`` (:data:`TRIM_THRESHOLD`, 1 GiB): the heap's free top is given back to
  the operating system only once it exceeds this;
* ``M_ARENA_MAX`` (:data:`ARENA_MAX`, 1): every thread allocates from that one heap. Without
  it glibc gives each further thread (``wrapgrad run --workers``, the engine's drawing thread)
  an arena of ``mmap``-ed 64 MiB heaps, and unmaps a heap as soon as it is empty whatever the
  thresholds say, so the page faults come back.

Why: by default glibc serves a block of 128 KiB or more with its own ``mmap`` and ``munmap``\\s
it when it is freed (the threshold adapts upwards only to 32 MiB). A Monte-Carlo estimate
allocates and frees the same few large tensors chunk after chunk (a batch of 128 noisy
32x32 images is 1.5 MiB, its activations and gradients several MiB each), so every chunk maps
fresh pages, and the kernel zero-fills each page on its first touch: a minor page fault per
4 KiB. Measured on the demo's explanation step, that page-fault work is a large share of the
CPU time (``docs/demo.md``); with the freed blocks kept on the heap the same pages are reused.
With two explaining threads (the demo's ``--workers 2``) the thread arenas brought back 6x the
page faults and 7-14 % of the wall time of a FusionGrad batch (``docs/demo.md``); one arena
removed them.

The trade-off: freed memory stays with the process (its resident size is its peak working
set, not its current one) until the process ends, or until the free top of the heap exceeds
:data:`TRIM_THRESHOLD`. That suits one command that runs to completion; a long-lived process
sharing the machine may prefer glibc's defaults. So only the ``wrapgrad`` command line calls
this (once, at the start of :func:`wrapgrad.cli.main`): importing ``wrapgrad`` as a library
never changes the process's allocator. ``WRAPGRAD_KEEP_FREED_MEMORY=0`` turns it off; off glibc
(macOS, Windows, musl) it does nothing and says so at debug level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = [
    "ARENA_MAX",
    "KEEP_FREED_MEMORY_ENV",
    "MMAP_THRESHOLD",
    "MMAP_THRESHOLD_FALLBACK",
    "TRIM_THRESHOLD",
    "keep_freed_memory",
]

log = logging.getLogger(__name__)

#: ``0`` (or ``false``, ``no``, ``off``) keeps glibc's defaults in the ``wrapgrad`` command.
KEEP_FREED_MEMORY_ENV = "WRAPGRAD_KEEP_FREED_MEMORY"
#: Blocks below this size come from the heap, not from their own ``mmap`` (1 GiB).
MMAP_THRESHOLD = 1 << 30
#: The heap's free top is returned to the operating system above this size (1 GiB).
TRIM_THRESHOLD = 1 << 30
#: The largest ``M_MMAP_THRESHOLD`` every 64-bit glibc accepts (``DEFAULT_MMAP_THRESHOLD_MAX``,
#: 32 MiB), tried when :data:`MMAP_THRESHOLD` is refused (newer glibc caps it at half a heap).
MMAP_THRESHOLD_FALLBACK = 32 << 20
#: Arenas (heaps) the threads share: one, so that every thread's freed blocks are kept too.
ARENA_MAX = 1

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _enabled() -> bool:
    value = os.environ.get(KEEP_FREED_MEMORY_ENV, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def _libc() -> ctypes.CDLL | None:
    """The C library if it is glibc (the only one whose ``mallopt`` takes these parameters)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory() -> dict[str, int]:
    """Tune glibc ``malloc`` to keep freed blocks in the process (see the module docstring).

    Call it once at the start of a command-line process, never from library code: the setting
    applies to the whole process.

    Returns:
        What was set: ``{"M_MMAP_THRESHOLD": bytes, "M_TRIM_THRESHOLD": bytes,
        "M_ARENA_MAX": 1}``, or ``{}`` when ``WRAPGRAD_KEEP_FREED_MEMORY=0`` turns it off or
        the C library is not glibc.
    """
    if not _enabled():
        log.debug("%s=0: glibc malloc keeps its defaults", KEEP_FREED_MEMORY_ENV)
        return {}
    libc = _libc()
    if libc is None:
        log.debug("not glibc on Linux: malloc keeps its defaults")
        return {}
    done: dict[str, int] = {}
    for name, param, values in (
        ("M_MMAP_THRESHOLD", _M_MMAP_THRESHOLD, (MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK)),
        ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, (TRIM_THRESHOLD,)),
        ("M_ARENA_MAX", _M_ARENA_MAX, (ARENA_MAX,)),
    ):
        for value in values:
            if libc.mallopt(param, value) == 1:  # mallopt returns 1 on success, 0 on refusal
                done[name] = value
                break
            log.debug("mallopt(%s, %d) refused", name, value)
    return done
