"""`signals_deferred`: a signal that arrives while tuning workers are spawned is handled
after the spawning, not in its middle (CI: the scheduler's SIGTERM landed between a
worker's start and the write of its arguments; the child printed "Ran out of input")."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from serverless_ml.pipelines.train import signals_deferred


def test_a_signal_inside_the_block_is_handled_once_after_it() -> None:
    seen: list[tuple[str, int]] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: seen.append(("handler", signum)))
    try:
        with signals_deferred((signal.SIGUSR1,)):
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            seen.append(("inside", 0))
        assert seen == [("inside", 0), ("handler", signal.SIGUSR1)]
        assert signal.getsignal(signal.SIGUSR1) is not None and signal.getsignal(signal.SIGUSR1) is not previous
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_an_exception_in_the_block_restores_the_handler() -> None:
    def handler(_signum: int, _frame: Any) -> None:
        pass

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(RuntimeError), signals_deferred((signal.SIGUSR1,)):
            raise RuntimeError("spawn failed")
        assert signal.getsignal(signal.SIGUSR1) is handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_outside_the_main_thread_the_block_just_runs() -> None:
    ran: list[bool] = []

    def body() -> None:
        with signals_deferred((signal.SIGUSR1,)):
            ran.append(True)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert ran == [True]


def test_the_trial_logger_s_helper_is_spawned_with_the_signals_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trials' logger spawns a helper process as tuning workers are spawned: a SIGTERM
    during it is handled after it (CI: the scheduler's clean stop printed a traceback from
    the logger's child, "Ran out of input")."""
    from types import SimpleNamespace

    from serverless_ml.pipelines import train

    seen: list[str] = []

    class Spawning:
        def __init__(self, *_args: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("spawned")

    monkeypatch.setattr(train, "TrialLogger", Spawning)
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: seen.append("handled"))
    try:
        prep = SimpleNamespace(tracker=SimpleNamespace(uri="sqlite:///x.db"), experiment_id="1")
        logger = train.start_trial_logger(prep, "run", SimpleNamespace(name="titanic"))  # type: ignore[arg-type]
        assert isinstance(logger, Spawning)
        assert seen == ["spawned", "handled"]
    finally:
        signal.signal(signal.SIGTERM, previous)
