"""The conditions of an evaluation: sample seeds, prompts read from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from diversity_callbacks import DiversityCallback
from tests.helpers.callback import make_callback


def test_sample_seeds_are_pinned_across_versions():
    # Changing the derivation would silently change every user's evaluation set.
    assert DiversityCallback.sample_seed(0, 0) == 5857645148978988075
    assert DiversityCallback.sample_seed(3, 7) == 6983089048290858884


def test_prompts_load_from_a_text_file_one_per_line(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n\n  a dog  \n", encoding="utf-8")
    evaluation_set = make_callback(prompts=path, samples_per_condition=2).evaluation_set
    assert evaluation_set.conditions == ("a cat", "a dog") and evaluation_set.num_samples == 4
    assert make_callback(prompts=str(path)).evaluation_set.conditions == ("a cat", "a dog")


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\na dog\n", encoding="utf-8-sig")  # as Windows editors save
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert make_callback(prompts=path).evaluation_set.conditions == ("a cat", "a dog")


def test_an_empty_prompt_file_is_rejected(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no prompt"):
        make_callback(prompts=path)
