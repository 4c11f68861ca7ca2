"""What ``diversity-callbacks score`` writes: a terminal table, ``--json``, ``--csv``, ``--plot``.

``--json`` holds, per run: its name, path, prompt source, number of images, every metric, and
per prompt its number of images and its own Vendi scores; plus the command's options.
``--csv`` holds one row per run (``run, path, images, prompts`` and one column per metric).
``--plot DIR`` writes ``runs-<metric>.png`` (one bar chart per metric, the runs side by side),
``summary.png`` (all of them in one figure),
``per-prompt-vendi_q<q>.png`` (each run's distribution of per-prompt Vendi scores: a box and
every prompt as a dot), drawn with matplotlib; with ``--grids``, ``grid-<run>.png`` (rows: the
first 8 prompts, columns: their first 8 images) and, with ``--reference``, ``copies-<run>.png``
(the most-copied images beside their training images): the pictures every logger gets, from
:mod:`~diversity_callbacks.media.render`, each with the captions of its rows in a CSV beside it
(``grid-<run>.csv``, ``copies-<run>.csv``), as the media folder writes ``copies.csv``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diversity_callbacks.cli.errors import InputError
from diversity_callbacks.cli.options import OutputOptions, ScoreOptions
from diversity_callbacks.cli.results import RunScore

PLOT_HINT = 'pip install "diversity-callbacks[plot]"'


def metric_keys(scores: Sequence[RunScore]) -> list[str]:
    """Every metric of any run, in the order the metrics declare their keys
    (:meth:`~diversity_callbacks.DiversityEvaluator.result_keys`): a run's own keys come in that
    order, and a key only a later run has follows the keys before it."""
    return list(dict.fromkeys(key for score in scores for key in score.metrics))


def table(scores: Sequence[RunScore]) -> str:
    """The runs side by side: one row per run, one column per metric (3 decimals)."""
    from diversity_callbacks.media.render import Table

    keys = metric_keys(scores)
    rows: list[list[str | float]] = [
        [
            score.name,
            str(score.num_images),
            str(len(score.prompts)) if score.prompts else "-",
            *(_value(score.metrics.get(key)) for key in keys),
        ]
        for score in scores
    ]
    return Table(["run", "images", "prompts", *keys], rows).text(digits=3)


def write_json(scores: Sequence[RunScore], path: str, options: ScoreOptions) -> None:
    """Every score, per run and per prompt, with the options, as JSON (NaN written as null)."""
    runs = []
    for score in scores:
        per_prompt = [
            {
                "prompt": prompt,
                "images": score.counts[number],
                **{key: _finite(column[number]) for key, column in score.per_prompt.items()},
            }
            for number, prompt in enumerate(score.prompts)
        ]
        runs.append(
            {
                "name": score.name,
                "path": score.path,
                "prompt_source": score.source,
                "images": score.num_images,
                "prompts": len(score.prompts),
                "metrics": {key: _finite(value) for key, value in score.metrics.items()},
                "per_prompt": per_prompt,
                "skipped": [{"path": p, "reason": r} for p, r in score.skipped],
                "seconds": score.seconds,
            }
        )
    document = {"runs": runs, "options": options.recorded()}
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    _parent(path)
    Path(path).write_text(text)


def write_csv(scores: Sequence[RunScore], path: str) -> None:
    """One row per run: ``run, path, images, prompts, <metric>...`` (empty cell: not computed),
    through :class:`~diversity_callbacks.media.render.Table`: text cells that a spreadsheet
    would run as a formula are quoted."""
    from diversity_callbacks.media.render import Table

    keys = metric_keys(scores)
    rows: list[list[str | float]] = []
    for score in scores:
        values = [score.metrics.get(key) for key in keys]
        cells = ["" if v is None or math.isnan(v) else v for v in values]
        rows.append([score.name, score.path, score.num_images, len(score.prompts), *cells])
    _parent(path)
    text = Table(["run", "path", "images", "prompts", *keys], rows).csv(line_end="\r\n")
    with open(path, "w", newline="") as handle:
        handle.write(text)


def write_all(scores: Sequence[RunScore], options: ScoreOptions) -> None:
    """The table and every output the options ask for. With ``--json -`` the JSON goes to
    standard output alone, and the table and the list of plots to standard error."""
    outputs = options.outputs
    screen = sys.stderr if outputs.json == "-" else sys.stdout
    print(table(scores), file=screen)
    if outputs.json:
        write_json(scores, outputs.json, options)
    if outputs.csv:
        write_csv(scores, outputs.csv)
    if outputs.plot:
        written = write_plots(scores, outputs.plot, grids=outputs.grids)
        print(f"plots: {', '.join(written)}", file=screen)
    if outputs.plot and options.metrics.modes:
        folders = write_modes(scores, outputs.plot)
        print(f"modes: {', '.join(folders)}", file=screen)


def write_modes(scores: Sequence[RunScore], folder: str) -> list[str]:
    """Each run's mode grids (or table) under ``folder/<run>/modes/``: its leading modes, and
    for every run after the first the first run's modes it lost and the modes it gained."""
    from diversity_callbacks.media.folder import write_media_folder
    from diversity_callbacks.media.modes import TABLE_COLUMNS, mode_panels, mode_table_rows
    from diversity_callbacks.media.render import Media, Table, slug

    written = []
    for score in scores:
        result = score.evaluation
        rows = mode_table_rows(result)
        media = Media(
            prefix="diversity",
            grids=[],
            table=None,
            spectrum=None,
            mode_panels=mode_panels(result),
            mode_table=Table(list(TABLE_COLUMNS), rows) if rows else None,
        )
        target = Path(folder) / slug(score.name)
        write_media_folder(target, media)
        written.append(str(target / "modes"))
    return written


def output_paths(outputs: OutputOptions) -> list[Path]:
    """The resolved files and folder the command writes, left out of the runs' images."""
    paths = [outputs.json, outputs.csv, outputs.plot]
    return [Path(path).resolve() for path in paths if path and path != "-"]


def check_output_paths(outputs: OutputOptions) -> None:
    """Refuse outputs that cannot be written, before any scoring (naming the flag and path).

    Raises:
        InputError: for a ``--json`` or ``--csv`` path that is a folder, a ``--plot`` path that
            is a file, or a path whose first existing parent is not a writable folder.
    """
    for flag, path, folder in (
        ("--json", outputs.json, False),
        ("--csv", outputs.csv, False),
        ("--plot", outputs.plot, True),
    ):
        if not path or (flag == "--json" and path == "-"):
            continue
        target = Path(path)
        if target.exists() and target.is_dir() != folder:
            expected = "a folder" if folder else "a file"
            got = "a folder" if target.is_dir() else "a file"
            raise InputError(f"{flag} {path!r} must be {expected}, got {got}")
        parent = target if folder and target.exists() else target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(
                f"{flag} {path!r} cannot be written: {str(parent)!r} is not a writable folder"
            )


def require_matplotlib() -> None:
    """Fail before any work when ``--plot`` is asked for without matplotlib.

    Raises:
        InputError: naming the ``pip install`` that adds it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise InputError(f"--plot needs matplotlib; install it with: {PLOT_HINT}") from error


def write_plots(scores: Sequence[RunScore], folder: str, grids: bool = False) -> list[str]:
    """Write the charts and the pictures (see the module docstring); return the files written."""
    from diversity_callbacks.media.render import copies_grid

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = write_charts(scores, out)
    names = _unique_safe([score.name for score in scores])
    if grids:
        for score, name in zip(scores, names, strict=True):
            written.extend(_grid(score, out / f"grid-{name}"))
    for score, name in zip(scores, names, strict=True):
        if score.copies is not None and score.copies.shown:
            written.extend(_picture(copies_grid(score.copies), out / f"copies-{name}"))
    return written


def write_charts(scores: Sequence[RunScore], out: Path) -> list[str]:
    """The matplotlib charts: a bar chart per metric, the summary, the per-prompt score charts."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = [score.name for score in scores]
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(scores))]
    for key in metric_keys(scores):
        values = [score.metrics.get(key, math.nan) for score in scores]
        figure, axes = plt.subplots(figsize=(1.6 + 1.1 * len(scores), 3.2), dpi=100)
        bars = axes.bar(names, values, color=colours)
        axes.bar_label(bars, labels=[_number(v) for v in values], padding=2, fontsize=9)
        axes.set_title(key)
        axes.set_ylabel(_ylabel(key))
        axes.margins(y=0.15)
        axes.spines[["top", "right"]].set_visible(False)
        written.append(_save(figure, out / f"runs-{_safe(key)}.png"))
    written.append(_summary(scores, out / "summary.png", plt, colours))
    columns = list(dict.fromkeys(key for score in scores for key in score.per_prompt))
    for key in columns:
        data = [[v for v in score.per_prompt.get(key, []) if not math.isnan(v)] for score in scores]
        if not any(data):
            continue
        figure, axes = plt.subplots(figsize=(1.6 + 1.3 * len(scores), 3.4), dpi=100)
        axes.boxplot(data, showfliers=False, widths=0.5)
        axes.set_xticks(range(1, len(names) + 1), names)
        for position, (values, colour) in enumerate(zip(data, colours, strict=True), start=1):
            spread = [position + 0.12 * math.sin(2.4 * i) for i in range(len(values))]
            axes.scatter(spread, values, s=14, color=colour, alpha=0.8, zorder=3)
        axes.set_title(f"per-prompt {key}: one dot per prompt")
        axes.set_ylabel("Vendi score of one prompt's images")
        axes.spines[["top", "right"]].set_visible(False)
        written.append(_save(figure, out / f"per-prompt-{_safe(key)}.png"))
    return written


def _picture(picture: Any, stem: Path) -> list[str]:
    """A media picture as ``<stem>.png``, and its captions as ``<stem>.csv``, as the media
    folder writes ``copies.png`` and ``copies.csv``."""
    png, captions = stem.with_suffix(".png"), stem.with_suffix(".csv")
    png.write_bytes(picture.png)
    captions.write_text(picture.csv())
    return [str(png), str(captions)]


def _unique_safe(names: Sequence[str]) -> list[str]:
    """File-name-safe names, made distinct (``"run 1"``, ``"run_1"``: ``run_1``, ``run_1-2``)."""
    found: list[str] = []
    for name in names:
        safe, candidate, count = _safe(name), _safe(name), 2
        while candidate in found:
            candidate, count = f"{safe}-{count}", count + 1
        found.append(candidate)
    return found


def _summary(scores: Sequence[RunScore], path: Path, plt: Any, colours: list[Any]) -> str:
    """Every metric in one figure: a small bar chart per metric, the runs side by side."""
    keys = metric_keys(scores)
    columns = min(len(keys), 4)
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.3 * columns + 0.4 * len(scores), 2.6 * rows), squeeze=False
    )
    names = [score.name for score in scores]
    for number, axis in enumerate(axes.flat):
        if number >= len(keys):
            axis.axis("off")
            continue
        values = [score.metrics.get(keys[number], math.nan) for score in scores]
        bars = axis.bar(names, values, color=colours)
        axis.bar_label(bars, labels=[_number(v) for v in values], padding=2, fontsize=8)
        axis.set_title(keys[number], fontsize=9)
        axis.tick_params(labelsize=8)
        axis.margins(y=0.2)
        axis.spines[["top", "right"]].set_visible(False)
    return _save(figure, path)


def _grid(score: RunScore, stem: Path, rows: int = 8) -> list[str]:
    """Rows: the first prompts; columns: their first images, as media's thumbnails (an image
    that cannot be read left blank); nothing for embeddings files."""
    from diversity_callbacks.cli.errors import ImageReadError
    from diversity_callbacks.cli.loading import decode_image
    from diversity_callbacks.evaluation.conditions import ConditionSet
    from diversity_callbacks.evaluation.options import EvaluatorOptions
    from diversity_callbacks.evaluation.samples import thumbnails
    from diversity_callbacks.media.render import GRID_COLUMNS, condition_rows

    if not score.files:
        return []
    shown: dict[int, list[Any]] = {}
    for condition in sorted(score.files)[:rows]:
        shown[condition] = []
        for file in score.files[condition][:GRID_COLUMNS]:
            try:
                pixels = decode_image(file).unsqueeze(0).float().div_(255)
            except ImageReadError:
                shown[condition].append(None)
                continue
            shown[condition].append(thumbnails(pixels, EvaluatorOptions.thumbnail_size)[0])
    conditions = ConditionSet.from_arguments(prompts=score.prompts or None)
    return _picture(condition_rows(conditions, shown), stem)


def _save(figure: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return str(path)


def _ylabel(key: str) -> str:
    if key.startswith("per_prompt_vendi"):
        return "mean over prompts"
    if key.startswith("sce"):
        return "effective number"
    return "effective number of samples"


def _value(value: float | None) -> float:
    return math.nan if value is None else value


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f}"


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _parent(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
