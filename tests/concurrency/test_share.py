"""The CPU share between the video and the tracker (the rule alone; tests/live has it running)."""

from __future__ import annotations

from streamer.concurrency.share import BEHIND, GROW_AFTER_S, CpuShare


def test_every_core_while_nobody_watches_one_less_while_watched() -> None:
    share = CpuShare(4)
    assert share.update(watched=False, skipped=0.0, now=0.0) == 4
    assert share.update(watched=True, skipped=0.0, now=1.0) == 3
    assert share.update(watched=False, skipped=0.0, now=2.0) == 4
    assert CpuShare(1).update(watched=True, skipped=0.5, now=0.0) == 1  # never below one thread


def test_fewer_threads_while_the_video_falls_behind_then_back_slowly() -> None:
    share = CpuShare(8)
    share.update(True, 0.0, 0.0)
    assert share.update(True, BEHIND + 0.1, 1.0) == 6  # frames skipped: one thread fewer at a time
    assert share.update(True, BEHIND + 0.1, 2.0) == 5
    assert share.update(True, 0.0, 3.0) == 5  # keeping up again: not at once
    assert share.update(True, 0.0, 2.0 + GROW_AFTER_S) == 6
    assert share.update(True, 0.0, 3.0 + GROW_AFTER_S) == 6  # the next one waits as long again
    assert share.update(True, 0.0, 2.0 + 2 * GROW_AFTER_S) == 7
    assert share.update(True, 0.0, 2.0 + 9 * GROW_AFTER_S) == 7  # never past cores - 1 while watched
