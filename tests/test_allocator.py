"""wrapgrad.allocator: glibc keeps freed blocks in the ``wrapgrad`` command, and only there.

Each case runs in a fresh interpreter (the setting is process-wide) and observes glibc itself:
``mallinfo2().hblks`` counts the blocks glibc serves with their own ``mmap``; with glibc's
defaults a 4 MiB ``malloc`` is one of them, with the setting it comes from the heap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux only)"
)

#: Prints {"done": what the case returned, "mmapped": whether a 4 MiB malloc was mmap-ed}.
PROBE = textwrap.dedent(
    """
    import ctypes, json, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)

    done = None
    {case}

    before = libc.mallinfo2().hblks
    p = libc.malloc(4 << 20)
    mmapped = libc.mallinfo2().hblks > before
    libc.free(p)
    print(json.dumps({{"done": done, "mmapped": mmapped}}))
    """
)


def probe(case: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "WRAPGRAD_KEEP_FREED_MEMORY"}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(case=case.strip())],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


needs_glibc = pytest.mark.skipif(not _glibc(), reason="glibc only")


@needs_glibc
def test_defaults_mmap_a_large_block() -> None:
    """The probe itself: without the setting a 4 MiB block is mmap-ed (else the other cases
    would pass for nothing)."""
    assert probe("pass")["mmapped"] is True


@needs_glibc
def test_keep_freed_memory_sets_the_thresholds_and_one_arena_and_says_so() -> None:
    from wrapgrad.allocator import MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK, TRIM_THRESHOLD

    r = probe("from wrapgrad.allocator import keep_freed_memory\ndone = keep_freed_memory()")
    assert r["mmapped"] is False
    assert r["done"]["M_TRIM_THRESHOLD"] == TRIM_THRESHOLD
    assert r["done"]["M_ARENA_MAX"] == 1
    assert r["done"]["M_MMAP_THRESHOLD"] in (MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK)


#: Prints {"main_heap": whether a 4 MiB block malloc-ed by a new thread lies in the main heap}.
THREAD_PROBE = textwrap.dedent(
    """
    import ctypes, json, threading
    {case}
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = (ctypes.c_ssize_t,)
    got = []
    t = threading.Thread(target=lambda: got.append(libc.malloc(4 << 20)))
    t.start()
    t.join()
    # the main heap grows by brk, below sbrk(0); a thread arena's heaps are mmap-ed far above
    print(json.dumps({{"main_heap": got[0] < libc.sbrk(0)}}))
    """
)


@needs_glibc
def test_keep_freed_memory_gives_new_threads_the_main_heap() -> None:
    """With one arena a worker thread's blocks come from the main heap (kept), not from a
    thread arena whose heaps glibc unmaps when empty."""

    def main_heap(case: str) -> bool:
        out = subprocess.run(
            [sys.executable, "-c", THREAD_PROBE.format(case=case)],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "WRAPGRAD_KEEP_FREED_MEMORY"},
        )
        return json.loads(out.stdout.strip().splitlines()[-1])["main_heap"]

    # the probe: with glibc's defaults the block is not in the main heap (its own mmap, above
    # the default threshold; with only the thresholds raised, a thread arena's heap)
    assert main_heap("") is False
    assert main_heap("from wrapgrad.allocator import keep_freed_memory; keep_freed_memory()")


@needs_glibc
@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_environment_variable_turns_it_off(value: str) -> None:
    r = probe(
        "from wrapgrad.allocator import keep_freed_memory\ndone = keep_freed_memory()",
        WRAPGRAD_KEEP_FREED_MEMORY=value,
    )
    assert r == {"done": {}, "mmapped": True}


@needs_glibc
def test_the_command_line_sets_it() -> None:
    r = probe("from wrapgrad.cli import main\ndone = main([])")
    assert r["mmapped"] is False


@needs_glibc
def test_library_use_changes_nothing() -> None:
    """Importing wrapgrad and its plugins and explaining with an enhancer leave glibc's
    defaults alone: only the command line tunes the allocator."""
    case = textwrap.dedent(
        """
        import torch, wrapgrad, wrapgrad.cli, wrapgrad_pipeline, wrapgrad_quantus
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        x = torch.rand(4, 3, 2, 2)
        wrapgrad.wrap(model, "saliency", "smoothgrad", enhancer_options={"seed": 0})(x, target=0)
        """
    )
    assert probe(case)["mmapped"] is True


def test_off_glibc_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from wrapgrad import allocator

    monkeypatch.delenv("WRAPGRAD_KEEP_FREED_MEMORY", raising=False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() == {}
