"""The one exception the job library raises for bad input or a result it
will not write: the scripts (train.py, score_flight.py) catch it, print the
message and exit with status 2 (3 for a SparkFailure); a caller that
imports the library decides for itself."""

from __future__ import annotations


class JobError(ValueError):
    """Input, options or a result that the job refuses, with the reason."""

    # The script's exit status.
    status = 2


class SparkFailure(JobError):
    """Spark (or the store it read) failed: the run may succeed again later."""

    status = 3


def exit_on_job_error(main):  # type: ignore[no-untyped-def]
    """Wraps a script's `main`: a JobError becomes `error: ...` on stderr and
    its exit status (2, or 3 for a SparkFailure), not a traceback."""
    import functools
    import sys

    @functools.wraps(main)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return main(*args, **kwargs)
        except JobError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(e.status) from None

    return run
