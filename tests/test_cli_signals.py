"""``wrapgrad.cli.on_sigterm``: SIGTERM unwinds the command as ``Terminated``; the handler that
was there before is back afterwards (the default one where it was set outside Python)."""

from __future__ import annotations

import os
import signal

import pytest

from wrapgrad import cli


def test_sigterm_raises_terminated_inside_and_the_old_handler_is_back_after() -> None:
    def mine(signum, frame):  # a handler of the caller's
        raise AssertionError("not called inside the block")

    before = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(cli.Terminated), cli.on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_handler_set_outside_python_gives_way_to_the_default(monkeypatch) -> None:
    real = signal.signal
    calls = []

    def fake(signum, handler):
        calls.append(handler)
        return None if len(calls) == 1 else real(signum, handler)  # None: set outside Python

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(signal, "signal", fake)
    try:
        with cli.on_sigterm():
            pass
        assert calls[-1] is signal.SIG_DFL
    finally:
        real(signal.SIGTERM, before)
