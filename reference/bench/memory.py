"""Resident memory of this process and of a child process, as the kernel counts it."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynamo_backend_protocol.model.exceptions import ProtocolError

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_bytes() -> int:
    """Resident set size now (Linux: /proc; elsewhere the peak so far, the best available)."""
    try:
        return _status_kib("VmRSS") * 1024
    except OSError:
        return _lifetime_peak_bytes()


def reset_peak() -> bool:
    """Start counting peak RSS from now; False where the kernel cannot (the peak is then the process's)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size since :func:`reset_peak` (or since the process started)."""
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return _lifetime_peak_bytes()


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in {_STATUS}")


def _lifetime_peak_bytes() -> int:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class ChildRun:
    exit_code: int
    seconds: float
    cpu_seconds: float
    """User plus system CPU time of the child (from wait4)."""
    peak_rss_bytes: int
    last_error_line: str
    """The last line the child wrote on stderr (empty if none)."""


class ChildTimeout(ProtocolError):
    """A measured child process overran its bound and was killed."""


# The kernel's own peak for a child (wait4's ru_maxrss) carries over the parent's
# resident size from before the exec, so the child reports the peak of its own
# address space as it exits.
_REPORTING_PEAK = """\
import atexit, runpy, sys
report, kind, target = sys.argv[1:4]
def _report_peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next((line.split()[1] for line in status if line.startswith("VmHWM:")), ""))
atexit.register(_report_peak)
sys.argv = [target, *sys.argv[4:]]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""


def run_python(kind: str, target: str, args: Sequence[str], timeout: float) -> ChildRun:
    """Run ``python -m target args`` (``kind`` ``-m``) or ``python -c target args``
    (``kind`` ``-c``) to completion, with stdout discarded: its wall time, its peak
    RSS and its exit code.  Killed, by its pid, past ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="dbp-child-") as folder:
        report = Path(folder) / "peak"
        command = [sys.executable, "-c", _REPORTING_PEAK, str(report), kind, target, *args]
        code, seconds, usage, last_error = _wait_for(command, timeout)
        reported = report.read_text().strip() if report.exists() else ""
        peak = int(reported) * 1024 if reported else usage.ru_maxrss * 1024
        return ChildRun(code, seconds, usage.ru_utime + usage.ru_stime, peak, last_error)


def _wait_for(command: Sequence[str], timeout: float) -> tuple[int, float, resource.struct_rusage, str]:
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, stdin=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid == child.pid:
                seconds = time.perf_counter() - started
                # Popen must not wait for a child already reaped.
                child.returncode = os.waitstatus_to_exitcode(status)
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()
                return child.returncode, seconds, usage, lines[-1] if lines else ""
            if time.perf_counter() > deadline:
                os.kill(child.pid, signal.SIGKILL)
                os.wait4(child.pid, 0)
                child.returncode = -signal.SIGKILL
                raise ChildTimeout(f"{' '.join(command[-3:])} overran {timeout:.0f}s and was killed")
            time.sleep(0.01)
