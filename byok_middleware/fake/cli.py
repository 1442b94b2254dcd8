"""``python -m byok_middleware fake-upstream``: the fake providers as a process of their own.

For following the README on a machine without provider access: it serves the six providers'
stand-ins on one port and prints the ``BYOK_BASE_URL_*`` lines that point a gateway at them.
``--print-env`` prints those lines for a port without serving, so a shell can
``eval "$(python -m byok_middleware fake-upstream --port 9100 --print-env)"``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from byok_middleware.fake.providers import PREFIXES, PROVIDERS
from byok_middleware.fake.server import FakeUpstream

__all__ = ["env_lines", "run_fake_upstream"]


def env_lines(root: str) -> list[str]:
    """``export BYOK_BASE_URL_<PROVIDER>=...`` for each provider, below ``root`` (no "/")."""
    return [f"export BYOK_BASE_URL_{p.upper()}={root}{PREFIXES[p]}" for p in PROVIDERS]


def run_fake_upstream(host: str, port: int, *, chunk_delay: float, print_env: bool) -> int:
    """Serve until SIGINT or SIGTERM (or only print the settings); returns the exit code.

    Raises:
        ValueError: ``--print-env`` without a fixed port.
        OSError: the port cannot be bound.
    """
    shown = f"[{host}]" if ":" in host else host
    if print_env:
        if port == 0:
            raise ValueError("--print-env needs a fixed --port (the URLs contain it)")
        print("\n".join(env_lines(f"http://{shown}:{port}")))
        return 0
    fake = FakeUpstream(chunk_delay, host=host, port=port).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print(f"# fake providers at {fake.url} until Ctrl-C; point the gateway at them with:")
        print("\n".join(env_lines(fake.url)), flush=True)
        while not stop.wait(1.0):
            pass  # a bounded wait, so signals are handled promptly on every platform
    finally:
        fake.stop()
    return 0
