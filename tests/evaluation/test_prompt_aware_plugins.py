"""Conditional-Vendi and Information-Vendi as evaluator plug-ins: on where defined, through the
evaluator, the callback options and the CLI, with the functional form's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diversity_callbacks import DiversityEvaluator, evaluate_existing
from diversity_callbacks.cli import main
from diversity_callbacks.functional import conditional_vendi_score, information_vendi_score

GENERATOR = torch.Generator().manual_seed(3)
EMBEDDINGS = torch.randn(12, 6, generator=GENERATOR, dtype=torch.float64)
TEXTS = torch.randn(3, 4, generator=GENERATOR, dtype=torch.float64)
IDS = [0, 1, 2] * 4
KEYS = {f"diversity/{name}_{q}" for name in ("cond_vendi", "info_vendi") for q in ("q1", "q2")}


class _Embeddings:
    """Samples that are their own embeddings, and a text embedding per prompt "a", "b", "c"."""

    def embed_samples(self, samples: torch.Tensor) -> torch.Tensor:
        return samples

    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        return TEXTS[[ord(prompt) - ord("a") for prompt in prompts]]


def _scalars(evaluator: DiversityEvaluator) -> dict[str, float]:
    return evaluate_existing(evaluator, [(EMBEDDINGS, IDS)], progress=False).scalars


def _expected(**conditions) -> dict[str, float]:
    expected = {}
    for name, score in (
        ("cond_vendi", conditional_vendi_score),
        ("info_vendi", information_vendi_score),
    ):
        for key, value in score(EMBEDDINGS, q=[1, 2], **conditions).items():
            expected[f"diversity/{name}_{key}"] = float(value)
    return expected  # fmt: skip


def test_class_labels_get_both_scores_with_the_label_kernel():
    evaluator = DiversityEvaluator(class_labels=[5, 6, 7], embedder=lambda x: x, value_range=None)
    scalars = _scalars(evaluator)
    for key, value in _expected(condition_ids=torch.tensor(IDS)).items():
        assert scalars[key] == pytest.approx(value, rel=1e-9), key


def test_prompts_with_embed_texts_get_both_scores_with_the_prompt_embeddings():
    evaluator = DiversityEvaluator(
        ["a", "b", "c"], embedder=_Embeddings(), value_range=None, sce=False, clip_score=False
    )  # 4-d prompts beside 6-d samples: no CLIPScore (one space needed), the scores work
    scalars = _scalars(evaluator)
    for key, value in _expected(condition_features=TEXTS[IDS]).items():
        assert scalars[key] == pytest.approx(value, rel=1e-9), key


def test_prompts_without_embed_texts_leave_them_out_and_true_names_what_is_missing():
    evaluator = DiversityEvaluator(["a", "b", "c"], embedder=lambda x: x, value_range=None)
    assert not KEYS & set(_scalars(evaluator))
    with pytest.raises(ValueError, match=r"`cond_vendi=True` needs class labels, or text prompts"):
        DiversityEvaluator(["a", "b"], embedder=lambda x: x, value_range=None, cond_vendi=True)
    with pytest.raises(ValueError, match=r"`info_vendi=True` needs.*embed_texts"):
        DiversityEvaluator(num_samples=4, embedder=lambda x: x, value_range=None, info_vendi=True)


def test_false_turns_each_off():
    evaluator = DiversityEvaluator(
        class_labels=[0, 1, 2], embedder=lambda x: x, value_range=None, info_vendi=False
    )
    keys = set(_scalars(evaluator))
    assert {"diversity/cond_vendi_q1", "diversity/cond_vendi_q2"} <= keys
    assert not any(key.startswith("diversity/info_vendi") for key in keys)


def test_the_score_command_logs_them_and_its_flags_turn_them_off(tmp_path: Path):
    torch.save(
        {"embeddings": EMBEDDINGS, "prompts": [["a", "b", "c"][i] for i in IDS],
         "text_embeddings": TEXTS[IDS]},
        tmp_path / "run.pt",
    )  # fmt: skip
    flags = ["--workers", "0", "--no-progress", "--clip-score", "off"]  # 4-d prompts, 6-d images
    for extra, present in (([], True), (["--cond-vendi", "off", "--info-vendi", "off"], False)):
        out = tmp_path / "scores.json"
        assert main(["score", str(tmp_path / "run.pt"), *flags, *extra, "--json", str(out)]) == 0
        (run,) = json.loads(out.read_text())["runs"]
        assert ("cond_vendi_q1" in run["metrics"]) is present
        assert ("info_vendi_q2" in run["metrics"]) is present
    expected = conditional_vendi_score(EMBEDDINGS, condition_features=TEXTS[IDS], q=1)
    assert main(["score", str(tmp_path / "run.pt"), *flags, "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["metrics"]["cond_vendi_q1"] == pytest.approx(float(expected), rel=1e-9)
