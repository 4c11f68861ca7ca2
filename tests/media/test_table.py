"""``media.render.Table`` as terminal text and as CSV with either line end (the command line's
table and ``--csv`` are written through it)."""

from __future__ import annotations

import csv
import io
import math

from diversity_callbacks.media.render import Table


def test_text_aligns_names_left_and_numbers_right_with_a_rule():
    table = Table(
        ["run", "images", "vendi_q1"], [["healthy", "108", 18.33512], ["bad", "9", math.nan]]
    )
    assert table.text().splitlines() == [
        "run      images  vendi_q1",
        "-------  ------  --------",
        "healthy     108    18.335",
        "bad           9         -",
    ]
    assert table.text(digits=1).splitlines()[2].endswith("18.3")


def test_csv_keeps_the_line_end_asked_for_and_quotes_formulas():
    table = Table(["run", "vendi_q1"], [["=HYPERLINK(1)", 2.0], ["-1.5", ""]])
    text = table.csv(line_end="\r\n")
    assert text == "run,vendi_q1\r\n'=HYPERLINK(1),2.0\r\n-1.5,\r\n"
    assert table.csv() == text.replace("\r\n", "\n")
    assert list(csv.reader(io.StringIO(text)))[1] == ["'=HYPERLINK(1)", "2.0"]


def test_floats_are_written_so_that_they_read_back_exactly():
    value = 0.1 + 0.2
    (row,) = list(csv.DictReader(io.StringIO(Table(["x"], [[value]]).csv())))
    assert float(row["x"]) == value
