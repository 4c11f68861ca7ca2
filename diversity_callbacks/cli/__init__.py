"""The ``diversity-callbacks`` command line: ``diversity-callbacks score RUN [RUN ...]``.

One sub-command per job (``score`` for now), each in its own module; this one only parses the
command line, turns the ``Namespace`` into typed options once, and turns the package's own input
errors into a one-line message and exit status 2. Parsing needs only
:mod:`~diversity_callbacks.cli.parser`; torch, torchmetrics and Lightning are imported after it,
so ``--help`` and option errors answer at once:

- :mod:`~diversity_callbacks.cli.parser`: the argparse builder, one function per option group;
- :mod:`~diversity_callbacks.cli.options`: the options of ``score`` as frozen values;
- :mod:`~diversity_callbacks.cli.errors`: the command's errors and its exit status;
- :mod:`~diversity_callbacks.cli.discovery`: which images a run holds and their prompts;
- :mod:`~diversity_callbacks.cli.loading`: decoding in DataLoader workers, embeddings files;
- :mod:`~diversity_callbacks.cli.sources`: this process's share of a run, as batches;
- :mod:`~diversity_callbacks.cli.embedders`: open_clip by name or any import path;
- :mod:`~diversity_callbacks.cli.metrics`: a run's evaluator, asking the package which
  metrics apply;
- :mod:`~diversity_callbacks.cli.score`: the runs through
  :func:`~diversity_callbacks.evaluation.existing.evaluate_existing`, on one process or many;
- :mod:`~diversity_callbacks.cli.results`: what is known of a scored run;
- :mod:`~diversity_callbacks.cli.output`: the table, JSON, CSV and plots.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diversity_callbacks import __version__
from diversity_callbacks.cli.errors import INPUT_STATUS, InputError


def build_parser() -> argparse.ArgumentParser:
    """The ``diversity-callbacks`` argument parser with its sub-commands."""
    from diversity_callbacks.cli import parser as score_parser

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
        formatter_class=score_parser.HelpFormatter,
    )
    score_parser.add_arguments(scoring)
    scoring.set_defaults(handler=_score)
    return parser


def _score(args: argparse.Namespace) -> int:
    from diversity_callbacks.cli import score
    from diversity_callbacks.cli.options import ScoreOptions

    return score.run(ScoreOptions.from_namespace(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 input it cannot use).

    Only the package's own errors about the input (:class:`~diversity_callbacks.cli.errors.
    InputError`, and :class:`~diversity_callbacks.EvaluationError` for a batch that failed to
    read, embed or score) become a one-line message and status 2; anything else is a defect and
    propagates with its traceback.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    from diversity_callbacks.evaluation.errors import EvaluationError

    try:
        return args.handler(args)
    except (InputError, EvaluationError) as error:
        print(f"diversity-callbacks {args.command}: error: {error}", file=sys.stderr)
        return INPUT_STATUS
