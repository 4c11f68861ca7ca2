"""``diversity-callbacks score``: inputs of every kind, the same numbers as the Python API and as
one process, outputs read back, and every error named."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diversity_callbacks import DiversityEvaluator, evaluate_existing
from diversity_callbacks.cli import main
from diversity_callbacks.cli.loading import decode_image
from tests.helpers.cli import CELLS, PROMPTED, ROOT, cell_image, run_console, save, write_prompted
from tests.helpers.trainer import PixelEmbedder

PIXELS = ["--embedder", "tests.helpers.trainer:PixelEmbedder", "--workers", "0", "--no-progress"]


def score_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "scores.json"
    assert main(["score", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def repeated_distinct(folder: Path, k: int, copies: int, suffix: str = ".png") -> Path:
    for cell in range(k):
        for copy in range(copies):
            save(cell_image(cell), folder / f"{cell:02d}-{copy}{suffix}")
    return folder


# ------------------------------------------------------------------ scores


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_k_distinct_images_repeated_score_vendi_k(tmp_path, suffix):
    folder = repeated_distinct(tmp_path / "run", k=5, copies=4, suffix=suffix)
    (run,) = score_json(tmp_path, str(folder), *CELLS)["runs"]
    assert run["images"] == 20 and run["prompts"] == 0 and run["prompt_source"] == "none"
    tolerance = 1e-9 if suffix != ".jpg" else 0.05  # JPEG blurs the cell edges a little
    assert run["metrics"]["vendi_q1"] == pytest.approx(5.0, abs=tolerance)
    assert run["metrics"]["vendi_q2"] == pytest.approx(5.0, abs=tolerance)
    assert set(run["metrics"]) == {"vendi_q1", "vendi_q2"}  # no prompts: nothing else


def test_cli_numbers_equal_the_python_api_on_the_same_images(tmp_path):
    folder = write_prompted(tmp_path / "run", "folders")
    (run,) = score_json(tmp_path, str(folder), *PIXELS, "--batch-size", "4")["runs"]

    # The plain Python loop the docs show: decode, batch, evaluate_existing.
    prompts = list(PROMPTED)
    files = sorted(folder.rglob("*.png"))
    ids = [prompts.index(f.parent.name.replace("_", " ")) for f in files]
    images = torch.stack([decode_image(str(f)) for f in files])
    evaluator = DiversityEvaluator(prompts, embedder=PixelEmbedder(), value_range="uint8")
    batches = [(images[i : i + 3], ids[i : i + 3]) for i in range(0, len(files), 3)]
    result = evaluate_existing(evaluator, batches, progress=False)

    assert set(run["metrics"]) == {
        "vendi_q1",
        "vendi_q2",
        "per_prompt_vendi_q1",
        "per_prompt_vendi_q2",
        "sce",
        "sce_text",
        "clip_score",
        "cond_vendi_q1",
        "cond_vendi_q2",
        "info_vendi_q1",
        "info_vendi_q2",
    }
    for key, value in run["metrics"].items():
        assert value == pytest.approx(result.scalars[f"diversity/{key}"], rel=1e-9, abs=1e-12)
    per_prompt = {row["prompt"]: row for row in run["per_prompt"]}
    assert {p: row["images"] for p, row in per_prompt.items()} == {
        "a cat": 5,
        "a dog": 3,
        "a fish": 1,
    }
    for number, prompt in enumerate(prompts):
        for column in ("vendi_q1", "clip_score"):
            expected = float(result.per_condition[column][number])
            assert per_prompt[prompt][column] == pytest.approx(expected, rel=1e-9)
    # Uneven prompts: the mean over prompts, each prompt weighing the same (the fish's one image
    # scores 1), not over images.
    mean = sum(row["vendi_q1"] for row in per_prompt.values()) / 3
    assert run["metrics"]["per_prompt_vendi_q1"] == pytest.approx(mean, rel=1e-12)
    assert per_prompt["a fish"]["vendi_q1"] == pytest.approx(1.0)


@pytest.mark.parametrize("layout", ["csv", "jsonl", "sidecar", "folders"])
def test_every_prompt_source_assigns_the_same_prompts(tmp_path, layout):
    folder = write_prompted(tmp_path / layout, layout)
    (run,) = score_json(tmp_path, str(folder), *PIXELS)["runs"]
    assert run["prompt_source"] == ("manifest" if layout in ("csv", "jsonl") else layout)
    counts = {row["prompt"]: row["images"] for row in run["per_prompt"]}
    assert counts == {prompt: len(cells) for prompt, cells in PROMPTED.items()}
    reference = write_prompted(tmp_path / "reference", "folders")
    (expected,) = score_json(tmp_path, str(reference), *PIXELS)["runs"]
    for key, value in expected["metrics"].items():
        assert run["metrics"][key] == pytest.approx(value, rel=1e-9)


def test_an_explicit_manifest_path_is_used(tmp_path):
    folder = write_prompted(tmp_path / "run", "csv")
    (folder / "prompts.csv").rename(tmp_path / "elsewhere.csv")
    (run,) = score_json(
        tmp_path, str(folder), *PIXELS, "--manifest", str(tmp_path / "elsewhere.csv")
    )["runs"]
    assert run["prompt_source"] == "manifest" and run["prompts"] == 3


def test_images_of_mixed_sizes_are_each_embedded_at_their_own_size(tmp_path):
    folder = tmp_path / "run"
    for cell in range(3):  # the same three patterns at 16 px and at 32 px
        save(cell_image(cell, size=16), folder / f"small-{cell}.png")
        save(cell_image(cell, size=32), folder / f"large-{cell}.png")
    (run,) = score_json(tmp_path, str(folder), *CELLS, "--batch-size", "4")["runs"]
    assert run["images"] == 6
    assert run["metrics"]["vendi_q1"] == pytest.approx(3.0, abs=1e-9)


def test_two_runs_are_compared_in_one_table(tmp_path, capsys):
    healthy = repeated_distinct(tmp_path / "healthy", k=6, copies=2)
    collapsed = repeated_distinct(tmp_path / "collapsed", k=2, copies=6)
    assert main(["score", str(healthy), str(collapsed), *CELLS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "images", "prompts", "vendi_q1", "vendi_q2"]
    assert lines[2].split() == ["healthy", "12", "-", "6.000", "6.000"]
    assert lines[3].split() == ["collapsed", "12", "-", "2.000", "2.000"]


# ------------------------------------------------------------------ outputs


def test_json_csv_and_plots_are_written_and_read_back(tmp_path, capsys):
    healthy = write_prompted(tmp_path / "healthy", "folders")
    collapsed = write_prompted(
        tmp_path / "collapsed",
        "folders",
        {"a cat": [0, 0, 0, 0, 0], "a dog": [5, 5, 5], "a fish": [9]},
    )
    out = tmp_path / "report"
    args = ["score", str(healthy), str(collapsed), *PIXELS, "--names", "good", "bad"]
    args += ["--json", str(out / "s.json"), "--csv", str(out / "s.csv"), "--plot", str(out)]
    assert main([*args, "--grids"]) == 0
    document = json.loads((out / "s.json").read_text())
    with open(out / "s.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["good", "bad"] == [r["name"] for r in document["runs"]]
    for row, run in zip(rows, document["runs"], strict=True):
        assert int(row["images"]) == run["images"] == 9
        for key, value in run["metrics"].items():
            assert float(row[key]) == value  # repr round-trips exactly
    bad = document["runs"][1]
    assert bad["metrics"]["per_prompt_vendi_q1"] == pytest.approx(1.0)
    assert document["options"]["vendi_kernel"] == "cosine"
    keys = document["runs"][0]["metrics"]
    expected = {f"runs-{key}.png" for key in keys} | {
        "per-prompt-vendi_q1.png",
        "per-prompt-vendi_q2.png",
        "grid-good.png",
        "grid-bad.png",
        "summary.png",
    }
    assert expected <= {p.name for p in out.glob("*.png")}
    for name in expected:
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            if name.startswith("grid-"):  # 3 prompts by 8 16-pixel tiles, 2-pixel padding
                assert image.size == (8 * 18 + 2, 3 * 18 + 2)
            else:
                assert min(image.size) > 100
    assert "plots:" in capsys.readouterr().out


def test_plot_without_matplotlib_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    assert main(["score", str(folder), *CELLS, "--plot", str(tmp_path / "p")]) == 2
    assert 'pip install "diversity-callbacks[plot]"' in capsys.readouterr().err


# ------------------------------------------------------------------ errors


def test_an_empty_folder_is_refused_by_name(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no images")
    assert main(["score", str(tmp_path / "empty"), *CELLS]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "holds no image" in err


@pytest.mark.parametrize(("flags", "expected"), [([], []), (["--workers", "1"], [1])])
def test_a_small_run_decodes_in_the_main_process_unless_workers_are_asked_for(
    tmp_path, monkeypatch, flags, expected
):
    """Worker processes made 500 small images 0.63 of the bare embedder (0.98 without); without
    workers no DataLoader is built either (its per-batch work is the command's own cost)."""
    from diversity_callbacks.cli import loading

    started = []
    data_loader = loading.DataLoader
    monkeypatch.setattr(
        loading,
        "DataLoader",
        lambda *args, **kwargs: (
            started.append(kwargs["num_workers"]) or data_loader(*args, **kwargs)
        ),
    )
    folder = repeated_distinct(tmp_path / "run", k=3, copies=2)
    assert main(["score", str(folder), *CELLS[:2], "--no-progress", *flags]) == 0
    assert started == expected


def test_decoding_workers_start_from_a_thousand_images_and_follow_the_cpus():
    from diversity_callbacks.cli.options import WORKERS_FROM, decoding_workers

    assert decoding_workers(None, WORKERS_FROM - 1) == 0
    assert decoding_workers(None, WORKERS_FROM) == min(4, os.cpu_count() or 1)
    assert decoding_workers(0, 10**6) == 0 and decoding_workers(3, 10) == 3


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_image_fails_naming_its_path(tmp_path, capsys, workers):
    folder = repeated_distinct(tmp_path / "run", k=3, copies=2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    args = ["score", str(folder), *CELLS[:2], "--workers", workers, "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(folder / "broken.png") in err and "--on-error skip" in err


def test_a_corrupt_image_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=3, copies=2)
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "truncated.png").write_bytes((folder / "00-0.png").read_bytes()[:40])
    (run,) = score_json(tmp_path, str(folder), *CELLS, "--on-error", "skip")["runs"]
    err = capsys.readouterr().err
    assert str(folder / "broken.png") in err and str(folder / "truncated.png") in err
    assert run["images"] == 6
    assert {s["path"] for s in run["skipped"]} == {
        str(folder / "broken.png"),
        str(folder / "truncated.png"),
    }
    assert run["metrics"]["vendi_q1"] == pytest.approx(3.0, abs=1e-9)


def test_images_without_prompts_fail_or_are_skipped(tmp_path, capsys):
    folder = write_prompted(tmp_path / "run", "sidecar")
    (folder / "a_cat-000.txt").unlink()
    assert main(["score", str(folder), *PIXELS, "--prompts", "sidecar"]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) have no prompt" in err and "a_cat-000.png" in err
    (run,) = score_json(
        tmp_path, str(folder), *PIXELS, "--prompts", "sidecar", "--on-error", "skip"
    )["runs"]
    assert run["images"] == 8 and run["skipped"][0]["path"].endswith("a_cat-000.png")
    assert "a_cat-000.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("file,text\na.png,x\n", "columns 'file' and 'prompt'"),
        ("file,prompt\nmissing.png,x\n", "file 'missing.png' does not exist"),
    ],
)
def test_a_bad_csv_manifest_is_named_with_what_was_expected(tmp_path, capsys, manifest, message):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    (folder / "prompts.csv").write_text(manifest)
    assert main(["score", str(folder), *PIXELS]) == 2
    err = capsys.readouterr().err
    assert message in err and "prompts.csv" in err


def test_a_bad_jsonl_line_is_named_by_number(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    (folder / "prompts.jsonl").write_text('{"file": "00-0.png", "prompt": "a"}\n{"file": 3}\n')
    assert main(["score", str(folder), *PIXELS]) == 2
    assert "prompts.jsonl' line 2" in capsys.readouterr().err


def test_the_exact_gaussian_kernel_is_refused_with_the_memory_it_needs(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=4, copies=2)
    gaussian = [*CELLS, "--vendi-kernel", "gaussian", "--vendi-sigma", "1.0"]
    assert main(["score", str(folder), *gaussian, "--max-kernel-memory", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert "8 images needs about 0.0 GiB" in err and "gaussian:sigma=1,features=4096" in err
    assert "--vendi-kernel cosine" in err and "--max-kernel-memory" in err
    (run,) = score_json(tmp_path, str(folder), *gaussian)["runs"]  # 8 GiB default: fine
    assert run["metrics"]["vendi_q1"] > 1


@pytest.mark.parametrize("flag", ["--sce", "--clip-score"])
def test_a_metric_of_prompts_on_without_an_embedder_of_them_says_what_is_missing(
    tmp_path, capsys, flag
):
    folder = write_prompted(tmp_path / "run", "folders")
    assert main(["score", str(folder), *CELLS, flag, "on"]) == 2
    assert f"{flag} on needs an embedder of prompts" in capsys.readouterr().err


def test_clip_score_off_leaves_it_out(tmp_path):
    folder = write_prompted(tmp_path / "run", "folders")
    (run,) = score_json(tmp_path, str(folder), *PIXELS, "--clip-score", "off")["runs"]
    assert "clip_score" not in run["metrics"] and "sce" in run["metrics"]
    assert all("clip_score" not in row for row in run["per_prompt"])


# ------------------------------------------------------------------ embedders


def test_an_embedder_from_a_python_file(tmp_path):
    (tmp_path / "my_features.py").write_text(
        "import torch\n\n"
        "class Means:\n"
        "    def embed_images(self, images):\n"
        "        return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)\n"
    )
    folder = repeated_distinct(tmp_path / "run", k=3, copies=3)
    spec = f"{tmp_path / 'my_features.py'}:Means"
    (run,) = score_json(tmp_path, str(folder), "--embedder", spec, "--workers", "0")["runs"]
    assert run["metrics"]["vendi_q1"] == pytest.approx(3.0, abs=1e-9)


def test_a_bad_embedder_import_path_is_named(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    assert main(["score", str(folder), "--embedder", "tests.helpers.cli:nothing_here"]) == 2
    assert "has no attribute 'nothing_here'" in capsys.readouterr().err
    assert main(["score", str(folder), "--embedder", "no_colon"]) == 2
    assert "'module:attribute'" in capsys.readouterr().err


def test_open_clip_from_a_local_weights_file_equals_the_python_api(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from diversity_callbacks import CLIPEmbedder
    from tests.helpers.embedders import TINY_CLIP

    torch.manual_seed(1)
    weights = tmp_path / "tiny.bin"
    torch.save(
        open_clip.create_model("ViT-B-32", pretrained=None, **TINY_CLIP).state_dict(), weights
    )
    folder = write_prompted(tmp_path / "run", "folders")
    config = json.dumps(TINY_CLIP)
    clip = ["--model", "ViT-B-32", "--pretrained", str(weights), "--model-config", config]
    (run,) = score_json(tmp_path, str(folder), *clip, "--workers", "0", "--batch-size", "16")[
        "runs"
    ]
    assert {"vendi_q1", "per_prompt_vendi_q1", "sce", "sce_text"} <= set(run["metrics"])

    embedder = CLIPEmbedder(
        "ViT-B-32", pretrained=str(weights), model_kwargs=TINY_CLIP, batch_size=16
    )
    files = sorted(folder.rglob("*.png"))
    prompts = list(PROMPTED)
    ids = [prompts.index(f.parent.name.replace("_", " ")) for f in files]
    images = torch.stack([decode_image(str(f)) for f in files])
    evaluator = DiversityEvaluator(prompts, embedder=embedder, value_range="uint8")
    result = evaluate_existing(evaluator, [(images, ids)], progress=False)
    for key, value in run["metrics"].items():
        assert value == pytest.approx(result.scalars[f"diversity/{key}"], rel=1e-6)


def test_an_unknown_open_clip_tag_gets_clip_embedders_message(tmp_path, capsys):
    pytest.importorskip("open_clip")
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    assert main(["score", str(folder), "--pretrained", "no_such_tag", "--workers", "0"]) == 2
    assert "pretrained='no_such_tag' is neither an existing file nor an open_clip tag" in (
        capsys.readouterr().err
    )


# ------------------------------------------------------------------ embeddings files


def test_embeddings_files_with_prompts_give_every_metric(tmp_path):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 8, generator=generator, dtype=torch.float64)
    prompts = ["a", "b", "c"] * 4
    text = torch.randn(3, 8, generator=generator, dtype=torch.float64)[[0, 1, 2] * 4]
    torch.save(
        {"embeddings": embeddings, "prompts": prompts, "text_embeddings": text}, tmp_path / "run.pt"
    )
    np.save(tmp_path / "plain.npy", embeddings.numpy())
    document = score_json(
        tmp_path, str(tmp_path / "run.pt"), str(tmp_path / "plain.npy"), "--batch-size", "5"
    )
    run, plain = document["runs"]
    assert (run["name"], plain["name"]) == ("run", "plain")
    assert {"per_prompt_vendi_q1", "sce", "sce_text"} <= set(run["metrics"])
    assert run["metrics"]["vendi_q1"] == pytest.approx(plain["metrics"]["vendi_q1"], rel=1e-12)
    evaluator = DiversityEvaluator(
        ["a", "b", "c"], embedder=lambda x: x, value_range=None, sce=False
    )
    ids = [0, 1, 2] * 4
    result = evaluate_existing(evaluator, [(embeddings, ids)], progress=False)
    assert run["metrics"]["per_prompt_vendi_q1"] == pytest.approx(
        result.scalars["diversity/per_prompt_vendi_q1"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"features": torch.zeros(2, 2)}, "with key 'embeddings'"),
        (
            {"embeddings": torch.zeros(3)},
            "must be a floating (N, D) tensor, got torch.float32 of shape (3,)",
        ),
        ({"embeddings": torch.ones(2, 2), "prompts": ["a"]}, "must be a list of 2 strings"),
        ({"embeddings": torch.ones(2, 2), "text_embeddings": torch.ones(2, 2)}, "no 'prompts'"),
        ({"embeddings": torch.tensor([[1.0, math.nan]])}, "NaN or Inf in row 0"),
    ],
)
def test_a_bad_embeddings_file_says_what_was_expected(tmp_path, capsys, content, message):
    torch.save(content, tmp_path / "bad.pt")
    assert main(["score", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.pt" in err


# ------------------------------------------------------------------ processes


def test_two_processes_give_the_numbers_of_one(tmp_path):
    healthy = write_prompted(tmp_path / "healthy", "folders")
    (healthy / "a_cat" / "broken.png").write_bytes(b"garbage")
    torch.save(
        {"embeddings": torch.randn(7, 5, dtype=torch.float64), "prompts": list("aabbbcc")},
        tmp_path / "emb.pt",
    )
    common = [
        str(healthy),
        str(tmp_path / "emb.pt"),
        *PIXELS,
        "--on-error",
        "skip",
        "--batch-size",
        "2",
    ]
    one = score_json(tmp_path, *common)
    done = run_console(
        "score",
        *common,
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--json",
        str(tmp_path / "two.json"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert "healthy" in done.stdout and done.stdout.count("sce_text") == 1  # one table: rank 0
    for single, double in zip(one["runs"], two["runs"], strict=True):
        assert double["images"] == single["images"]
        assert double["skipped"] == single["skipped"]
        for row_one, row_two in zip(single["per_prompt"], double["per_prompt"], strict=True):
            assert row_two.pop("vendi_q1") == pytest.approx(row_one.pop("vendi_q1"), rel=1e-9)
            assert row_two.pop("vendi_q2") == pytest.approx(row_one.pop("vendi_q2"), rel=1e-9)
            assert row_two == row_one  # prompt and number of images
        for key, value in single["metrics"].items():
            assert double["metrics"][key] == pytest.approx(value, rel=1e-9)


# ------------------------------------------------------------------ the command line itself


def test_help_parses_before_torch_is_imported_and_python_m_works():
    code = (
        "import sys, contextlib, io\n"
        "from diversity_callbacks.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['score', '--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'torchmetrics', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "diversity_callbacks", "score", "--help"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "diversity-callbacks score" in done.stdout
    assert "(default: 64)" in done.stdout and "(default: ViT-B-32)" in done.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-kernel-memory", "nan"),
        ("--max-kernel-memory", "inf"),
        ("--max-kernel-memory", "-1"),
        ("--vendi-orders", "-1"),
        ("--vendi-orders", "two"),
        ("--sce-sigma", "0"),
        ("--vendi-sigma", "nan"),
    ],
)
def test_bad_numbers_are_refused_naming_the_flag(tmp_path, capsys, option, value):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(folder), *CELLS, option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and repr(value) in err


# ------------------------------------------------------------------ round 3: silent defects


@pytest.mark.parametrize("layout", ["sidecar", "folders"])
def test_auto_prompts_that_almost_apply_name_the_images_without_one(tmp_path, capsys, layout):
    folder = write_prompted(tmp_path / "run", layout)
    if layout == "sidecar":
        (folder / "a_cat-000.txt").unlink()  # 8 of 9 sidecars
        stray = "a_cat-000.png"
    else:
        save(cell_image(3), folder / "stray.png")  # one image at the root of the layout
        stray = "stray.png"
    assert main(["score", str(folder), *PIXELS]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) have no prompt" in err and stray in err and "--prompts none" in err
    (run,) = score_json(tmp_path, str(folder), *PIXELS, "--on-error", "skip")["runs"]
    assert (
        run["prompt_source"] == layout
        and run["prompts"] == 3
        and run["images"] == 9 - (layout == "sidecar")
    )
    assert "sce" in run["metrics"] and stray in capsys.readouterr().err


def test_rescoring_a_folder_leaves_out_the_commands_own_outputs(tmp_path):
    folder = write_prompted(tmp_path / "rr", "folders")
    outputs = ["--plot", str(folder / "report"), "--grids", "--csv", str(folder / "s.csv")]
    first = score_json(tmp_path, str(folder), *PIXELS, *outputs)["runs"][0]
    assert (folder / "report" / "grid-rr.png").is_file()
    second = score_json(tmp_path, str(folder), *PIXELS, *outputs)["runs"][0]
    assert (first["images"], first["prompts"]) == (second["images"], second["prompts"]) == (9, 3)


def test_grids_of_names_that_sanitise_alike_are_written_apart(tmp_path, capsys):
    one = repeated_distinct(tmp_path / "a", k=2, copies=1)
    two = repeated_distinct(tmp_path / "b", k=3, copies=1)
    plots = tmp_path / "plots"
    args = [str(one), str(two), "--names", "run 1", "run_1", "--plot", str(plots), "--grids"]
    assert main(["score", *args, *CELLS]) == 0
    assert {p.name for p in plots.glob("grid-*.png")} == {"grid-run_1.png", "grid-run_1-2.png"}


def test_duplicate_manifest_rows_with_different_prompts_are_refused(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    rows = "file,prompt\n00-0.png,a cat\n01-0.png,a dog\n00-0.png,a fish\n"
    (folder / "prompts.csv").write_text(rows)
    assert main(["score", str(folder), *PIXELS]) == 2
    err = capsys.readouterr().err
    assert "prompts.csv" in err and "'00-0.png' has two prompts" in err
    assert "line 2" in err and "line 4" in err


def test_json_dash_writes_the_json_to_standard_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = repeated_distinct(tmp_path / "run", k=3, copies=1)
    assert main(["score", str(folder), *CELLS, "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["runs"][0]["metrics"]["vendi_q1"] == pytest.approx(3.0)
    assert "vendi_q1" in err  # the table, out of the JSON's way
    assert not (tmp_path / "-").exists()


def test_model_config_beside_embedder_is_refused(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    assert main(["score", str(folder), *CELLS, "--model-config", '{"embed_dim": 8}']) == 2
    assert "--model-config" in capsys.readouterr().err


def test_csv_cells_that_spreadsheets_would_run_are_quoted(tmp_path):
    one = repeated_distinct(tmp_path / "a", k=2, copies=1)
    two = repeated_distinct(tmp_path / "b", k=2, copies=1)
    out = tmp_path / "s.csv"
    names = ["=HYPERLINK(1)", "-1.5"]
    assert main(["score", str(one), str(two), *CELLS, "--names", *names, "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["run"] for row in rows] == ["'=HYPERLINK(1)", "-1.5"]
    assert float(rows[0]["vendi_q1"]) == pytest.approx(2.0)


# ------------------------------------------------------------------ round 3: clear errors


@pytest.mark.parametrize("flag", ["--csv", "--json", "--plot"])
def test_unusable_output_paths_fail_before_any_scoring(tmp_path, capsys, flag, monkeypatch):
    import diversity_callbacks.cli.score as score

    monkeypatch.setattr(score, "discover", lambda *a, **k: pytest.fail("scored first"))
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    target = {"--csv": tmp_path, "--json": blocker / "x.json", "--plot": blocker}[flag]
    assert main(["score", str(folder), *CELLS, flag, str(target)]) == 2
    err = capsys.readouterr().err
    assert flag in err and str(target) in err


@pytest.mark.parametrize("where", ["manifest", "sidecar", "folder"])
def test_text_that_is_not_utf8_is_named(tmp_path, capsys, where):
    folder = tmp_path / "run"
    latin = "café".encode("latin-1")
    if where == "manifest":
        repeated_distinct(folder, k=2, copies=1)
        (folder / "prompts.csv").write_bytes(b"file,prompt\n00-0.png," + latin + b"\n")
        named = "prompts.csv"
    elif where == "sidecar":
        write_prompted(folder, "sidecar")
        (folder / "a_cat-000.txt").write_bytes(latin)
        named = "a_cat-000.txt"
    else:
        sub = os.fsencode(folder) + b"/" + latin
        os.makedirs(sub)
        save(cell_image(1), Path(os.fsdecode(sub + b"/0.png")))
        save(cell_image(2), Path(os.fsdecode(sub + b"/1.png")))
        named = "must have a UTF-8 name"
    args = ["score", str(folder), *PIXELS]
    assert main([*args, "--prompts", "folders"] if where == "folder" else args) == 2
    err = capsys.readouterr().err
    assert named in err and ("UTF-8" in err)


def test_pt_prompts_given_as_numbers_are_refused_clearly(tmp_path, capsys):
    torch.save({"embeddings": torch.randn(3, 4), "prompts": [0, 1, 1]}, tmp_path / "e.pt")
    assert main(["score", str(tmp_path / "e.pt"), "--no-progress"]) == 2
    assert "whose item 0 is int 0" in capsys.readouterr().err


class FailsOnImage:
    """Embeds like ``cell_pixels`` but fails on any batch holding a pure-white-cell-15 image."""

    def embed_images(self, images):
        from tests.helpers.cli import cell_pixels

        features = cell_pixels(images)
        if bool((features[:, -1] > 0.99).any()):
            raise RuntimeError("the embedder choked")
        return features


def test_a_failed_embedding_names_the_batch_files_and_skip_leaves_them_out(tmp_path, capsys):
    folder = repeated_distinct(tmp_path / "run", k=4, copies=2)
    save(cell_image(15), folder / "zz-bad.png")  # sorted last: alone in the last batch
    args = [
        "score",
        str(folder),
        "--embedder",
        "tests.cli.test_score:FailsOnImage",
        "--workers",
        "0",
    ]
    args += ["--no-progress", "--batch-size", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "zz-bad.png" in err and "the embedder choked" in err and "--on-error skip" in err
    out = tmp_path / "s.json"
    assert main([*args, "--on-error", "skip", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["images"] == 8 and run["metrics"]["vendi_q1"] == pytest.approx(4.0)
    assert [s["path"] for s in run["skipped"]] == [str(folder / "zz-bad.png")]
    assert "warning: run 'run': skipped" in capsys.readouterr().err


def test_the_offline_clip_error_gives_the_flags_fix(tmp_path, capsys):
    pytest.importorskip("open_clip")
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    args = ["score", str(folder), "--pretrained", "laion2b_s34b_b79k", "--workers", "0"]
    assert main(args) == 2  # HF_HUB_OFFLINE=1 (tests/conftest.py), nothing cached
    err = capsys.readouterr().err
    assert "--pretrained /path/to/open_clip_pytorch_model.bin" in err
    assert "CLIPEmbedder(" not in err


def test_a_bad_model_config_is_blamed_on_the_overrides(tmp_path, capsys):
    pytest.importorskip("open_clip")
    folder = repeated_distinct(tmp_path / "run", k=2, copies=1)
    config = '{"no_such_option": 1}'
    args = ["score", str(folder), "--pretrained", "none", "--model-config", config]
    assert main([*args, "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--model-config" in err and "no_such_option" in err
