"""The one progress bar: drawn on a terminal only, never when disabled, cleared when done."""

from __future__ import annotations

import sys

import pytest

from diversity_callbacks.utilities.progress import progress_bar


@pytest.mark.parametrize(("enabled", "terminal"), [(True, True), (True, False), (False, True)])
def test_the_bar_draws_only_when_enabled_and_on_a_terminal(monkeypatch, capsys, enabled, terminal):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    with progress_bar(range(3), description="counting", enabled=enabled) as bar:
        assert list(bar) == [0, 1, 2]
    assert ("counting" in capsys.readouterr().err) is (enabled and terminal)


def test_a_bar_without_an_iterable_moves_by_update_and_is_cleared_at_the_end(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with progress_bar(description="batches", total=4, unit="batch") as bar:
        bar.update(3)
        bar.refresh()
    drawn = capsys.readouterr().err
    assert "batches:  75%" in drawn and "3/4" in drawn and "batch/s" in drawn
    *_, last, after = drawn.split("\r")
    assert last.strip() == "" and after == ""  # leave=False: the bar is blanked out at the end
