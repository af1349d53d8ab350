"""Starting a fraudflight process (`demo` or `serve`) from Python and
waiting until it listens: the one helper the tests and the benchmarks use.

The process prints `READY flight=grpc://HOST:PORT http=http://HOST:PORT` on
stdout once it listens; anything else on the first line (it exited, it
failed to bind) is a `ServerDidNotStart` naming the command and carrying
the end of its log.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import JobError


class ServerDidNotStart(JobError):
    """The process never printed its READY line."""


@dataclass
class Running:
    """A started fraudflight process and where it listens."""

    proc: subprocess.Popen
    flight: str
    http: str
    log: Path | None = None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a clean drain), then SIGKILL after `timeout` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(command: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None,
          log: Path | None = None, stderr: int | IO | None = subprocess.DEVNULL) -> Running:
    """Runs `command` and returns once it printed READY. With `log`, stderr
    goes to that file (and its tail into the error if the start fails)."""
    log_file = log.open("w") if log else None
    proc = subprocess.Popen([str(c) for c in command], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=log_file or stderr, text=True)
    if log_file:
        log_file.close()
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY"):
        proc.kill()
        proc.wait()
        tail = log.read_text()[-3000:] if log and log.exists() else ""
        raise ServerDidNotStart(f"{command[0]} {command[1] if len(command) > 1 else ''} did not start: {line!r}\n{tail}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return Running(proc, fields["flight"], fields.get("http", ""), log)
