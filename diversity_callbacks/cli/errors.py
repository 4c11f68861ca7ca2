"""The errors of ``diversity-callbacks``: the input it cannot use, each named in its message.

Only these (and :class:`~diversity_callbacks.EvaluationError`, the evaluation's report of a
batch that failed to read or embed, raised on every process alike) become the command's one-line
message and exit status 2 (:data:`INPUT_STATUS`); any other exception is a defect of the
package and keeps its traceback. Nothing here imports torch: the command line answers
``--help`` before it is imported.
"""

from __future__ import annotations

INPUT_STATUS = 2
"""The exit status of input the command cannot use (argparse's own, for a mistyped option)."""


class InputError(ValueError):
    """A run, a manifest, a file or an option that cannot be used, with a message naming it,
    what was expected and what was found."""


class ImageReadError(InputError, RuntimeError):
    """An image file that Pillow cannot decode, named by its path (a ``RuntimeError`` as
    before, for code that caught it as one)."""
