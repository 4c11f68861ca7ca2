"""The one error type of a failed evaluation."""


class EvaluationError(RuntimeError):
    """Sampling, embedding or computing the metrics failed during a diversity evaluation.

    Raised on every rank: a rank whose own part went well names the rank that failed and why.
    """
