"""Processes: start pinned servers, wait for them, read their CPU time and RSS from /proc; check
an older commit out beside this tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_REPOSITORY = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checked_out(ref: str, where: Path) -> Iterator[Path]:
    """``ref`` (a hash or a tag) in a detached git worktree at ``where``, removed afterwards."""
    git = ["git", "-C", str(_REPOSITORY), "worktree"]
    subprocess.run([*git, "add", "--detach", str(where), ref], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run([*git, "remove", "--force", str(where)], check=False)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (uvicorn may fork helpers; we count them too)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants, in seconds."""
    total = 0
    for each in descendants(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants, in MB."""
    total_kb = 0
    for each in descendants(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")


@dataclass
class Server:
    """A pinned server process; ``log`` collects its stdout and stderr."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        core: str,
        port: int,
        env: Mapping[str, str],
        log: Path,
        cwd: Path,
        timeout: float = 60,
    ) -> Server:
        handle = log.open("wb")
        proc = subprocess.Popen(
            ["taskset", "-c", core, *argv],
            env={**os.environ, **env},
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it never touches ours
        )
        handle.close()
        server = cls(proc, port, log)
        try:
            wait_for_port(port, proc, timeout)
        except Exception:
            server.stop()
            raise
        return server

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _own_seconds() -> float:
    times = os.times()
    return cpu_seconds(os.getpid()) + times.children_user + times.children_system


class ForeignLoad:
    """CPU that processes outside this benchmark used while a target was measured, as a share of
    all cores. ``idle`` are the other targets' servers, up but not under load: what they burn
    competes with the target, so it counts as foreign too. Measured over any number of slices
    (``start`` ... ``stop``), as a round interleaves its targets scenario by scenario."""

    def __init__(self, idle: Sequence[int] = ()) -> None:
        self.idle = list(idle)
        self.wall = self.foreign = 0.0
        self._start: tuple[float, float, float, float] | None = None

    def _now(self) -> tuple[float, float, float, float]:
        idle = sum(cpu_seconds(pid) for pid in self.idle)
        return time.monotonic(), _machine_busy_seconds(), _own_seconds(), idle

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        if self._start is None:
            return
        (wall0, busy0, own0, idle0), (wall1, busy1, own1, idle1) = self._start, self._now()
        self.wall += wall1 - wall0
        self.foreign += (busy1 - busy0) - (own1 - own0) + (idle1 - idle0)
        self._start = None

    def share(self) -> float:
        cores = os.cpu_count() or 1
        return max(0.0, self.foreign / (self.wall * cores)) if self.wall > 0 else 0.0


def wait_until_idle(pid: int, *, quiet: float = 0.005, timeout: float = 15) -> None:
    """Wait until ``pid`` stops burning CPU (a slow server still draining the warm-up)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last <= quiet:
            return
        last = now
