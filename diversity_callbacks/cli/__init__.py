"""The ``diversity-callbacks`` command line: ``diversity-callbacks score RUN [RUN ...]``.

One sub-command per job (``score`` for now), each in its own module; this one only parses the
command line and turns expected errors into a one-line message and exit status 2. Parsing needs
only :mod:`~diversity_callbacks.cli.options`; torch, torchmetrics and Lightning are imported
after it, so ``--help`` and option errors answer at once:

- :mod:`~diversity_callbacks.cli.options`: the options of ``score``;
- :mod:`~diversity_callbacks.cli.discovery`: which images a run holds and their prompts;
- :mod:`~diversity_callbacks.cli.loading`: decoding in DataLoader workers, embeddings files;
- :mod:`~diversity_callbacks.cli.embedders`: open_clip by name or any import path;
- :mod:`~diversity_callbacks.cli.score`: the runs through
  :func:`~diversity_callbacks.evaluation.existing.evaluate_existing`, on one process or many;
- :mod:`~diversity_callbacks.cli.output`: the table, JSON, CSV and plots.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diversity_callbacks import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``diversity-callbacks`` argument parser with its sub-commands."""
    from diversity_callbacks.cli import options

    parser = argparse.ArgumentParser(
        prog="diversity-callbacks",
        description="Diversity of generative models: Vendi score, per-prompt Vendi, Schur "
        "complement entropy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scoring = commands.add_parser(
        "score",
        help="score folders of images (or embeddings files) side by side",
        description="Score the diversity of one or more runs (folders of generated images or "
        "embeddings files) and compare them in one table.",
        formatter_class=options.HelpFormatter,
    )
    options.add_arguments(scoring)
    scoring.set_defaults(handler=_score)
    return parser


def _score(args: argparse.Namespace) -> int:
    from diversity_callbacks.cli import score

    return score.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input or failed run).

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    from diversity_callbacks.cli.discovery import InputError
    from diversity_callbacks.cli.loading import ImageReadError
    from diversity_callbacks.evaluation.errors import EvaluationError

    try:
        return args.handler(args)
    # ValueError and RuntimeError: e.g. CLIPEmbedder's errors about names and weights files
    except (
        InputError,
        ImageReadError,
        EvaluationError,
        ImportError,
        ValueError,
        RuntimeError,
    ) as error:
        print(f"diversity-callbacks {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
