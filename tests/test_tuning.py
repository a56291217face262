"""The process tuning every ``choreograph`` command applies at start."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from choreograph.tuning import (
    SWITCH_INTERVAL_SECONDS,
    YOUNG_GENERATION_THRESHOLD,
    tune_garbage_collector,
    tune_process,
    tune_thread_switching,
)

CPYTHON_YOUNG_THRESHOLD = 700
CPYTHON_SWITCH_INTERVAL = 0.005


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    """CPython's default young threshold for the test (so that a tuning that did nothing
    fails), the process's own thresholds after it."""
    before = gc.get_threshold()
    gc.set_threshold(CPYTHON_YOUNG_THRESHOLD, *before[1:])
    yield before
    gc.set_threshold(*before)


@pytest.fixture
def restored_switch_interval() -> Iterator[float]:
    """CPython's default switch interval for the test, the process's own after it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(CPYTHON_SWITCH_INTERVAL)
    yield before
    sys.setswitchinterval(before)


def test_the_young_generation_is_collected_less_often_and_the_others_keep_their_ratios(
    restored_thresholds: tuple[int, int, int],
) -> None:
    _, middle, oldest = restored_thresholds

    tune_garbage_collector()

    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, middle, oldest)
    assert gc.isenabled()


def test_a_waiting_thread_gets_the_gil_after_the_tuned_interval(
    restored_switch_interval: float,
) -> None:
    tune_thread_switching()

    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)


def test_tuning_the_process_applies_every_tuning(
    restored_thresholds: tuple[int, int, int], restored_switch_interval: float
) -> None:
    tune_process()

    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)


def test_the_command_line_tunes_its_process() -> None:
    # The CLI's entry point, as the ``choreograph`` script runs it, in a process of its own.
    script = (
        "import gc, sys\n"
        "from choreograph import cli\n"
        "sys.argv = ['choreograph', '--help']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold()[0], sys.getswitchinterval(), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    threshold, interval = done.stderr.strip().splitlines()[-1].split()
    assert int(threshold) == YOUNG_GENERATION_THRESHOLD
    assert float(interval) == pytest.approx(SWITCH_INTERVAL_SECONDS)
