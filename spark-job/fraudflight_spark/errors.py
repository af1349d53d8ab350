"""The one exception the job library raises for bad input or a result it
will not write: the scripts (train.py, score_flight.py) catch it, print the
message and exit with status 2; a caller that imports the library decides
for itself."""

from __future__ import annotations


class JobError(ValueError):
    """Input, options or a result that the job refuses, with the reason."""


def exit_on_job_error(main):  # type: ignore[no-untyped-def]
    """Wraps a script's `main`: a JobError becomes `error: ...` on stderr and
    exit status 2, not a traceback."""
    import functools
    import sys

    @functools.wraps(main)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return main(*args, **kwargs)
        except JobError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return run
