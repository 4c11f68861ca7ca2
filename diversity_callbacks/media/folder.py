"""Media as files: PNG grids, the per-condition CSV and the spectrum PNG in one folder.

Used for ``DiversityCallback(media_dir=...)`` (any logger, CSV users included) and as the
artifact folder the MLflow writer uploads, so both have the same layout::

    step_000120/
        samples/00_a_red_apple.png   one grid per condition, numbered in set order
        table.csv                    condition, then one column per per-condition score
        spectrum.png                 with spectrum=True
        copies.png, copies.csv       with a reference set: most-copied samples | training ones
        modes/mode_01.png            one grid per mode (modes=k): leading modes, then
        modes/lost_01.png            lost and gained modes with compare_to (captions in
        modes/captions.txt           captions.txt); modes.csv instead for text samples
"""

from __future__ import annotations

from pathlib import Path

from diversity_callbacks.media.render import Media


def step_folder(step: int) -> str:
    """The folder name of one evaluation: ``step_000120``."""
    return f"step_{step:06d}"


def write_media_folder(folder: Path, media: Media) -> list[Path]:
    """Write the media of one evaluation under ``folder``; return the files written.

    Args:
        folder: created if missing; existing files of the same names are replaced (a resumed
            run evaluating a step again).
        media: the rendered media.
    """
    files = {f"samples/{grid.name}.png": grid.png for grid in media.grids}
    if media.table is not None:
        files["table.csv"] = media.table.csv().encode()
    if media.spectrum_png is not None:
        files["spectrum.png"] = media.spectrum_png
    if media.copies is not None and media.copies.pairs:
        files["copies.png"] = media.copies.png
        files["copies.csv"] = media.copies.csv().encode()
    for panel in media.mode_panels:
        files[f"modes/{panel.name}.png"] = panel.png
    if media.mode_panels:
        captions = "".join(f"{panel.name}.png: {panel.caption}\n" for panel in media.mode_panels)
        files["modes/captions.txt"] = captions.encode()
    if media.mode_table is not None:
        files["modes.csv"] = media.mode_table.csv().encode()
    written = []
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
