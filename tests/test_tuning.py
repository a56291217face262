"""The process tuning every ``choreograph`` command applies at start."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from choreograph.tuning import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_the_others_keep_their_ratios(
    restored_thresholds: tuple[int, int, int],
) -> None:
    _, middle, oldest = restored_thresholds

    tune_garbage_collector()

    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, middle, oldest)
    assert gc.isenabled()


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
        "print(gc.get_threshold()[0], file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip().splitlines()[-1] == str(YOUNG_GENERATION_THRESHOLD)
