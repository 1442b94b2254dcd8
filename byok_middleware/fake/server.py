"""FakeUpstream: the fake app served by uvicorn on 127.0.0.1 in a background thread.

uvicorn is an extra (``byok_middleware[fastapi]`` or ``[litestar]``), so it is imported when a
server starts, not here: ``import byok_middleware.testing`` works on a plain install.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Final

from byok_middleware.fake.app import Journal, build_app
from byok_middleware.fake.providers import PREFIXES, PROVIDERS, check_provider
from byok_middleware.fake.records import RecordedRequest, Scripted

if TYPE_CHECKING:
    import uvicorn

#: What uvicorn logs when a stream is cut on purpose (`Scripted.cut_after`); silenced.
_CUT_MESSAGE: Final = "ASGI callable returned without completing response."
_THREAD_NUMBERS = itertools.count(1)


class _CutStreamFilter(logging.Filter):
    """Drops uvicorn's complaint about deliberately cut streams, from one server thread only."""

    def __init__(self, thread_name: str) -> None:
        super().__init__()
        self._thread_name = thread_name

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName == self._thread_name and record.getMessage() == _CUT_MESSAGE)


class FakeUpstream:
    """A real HTTP server on 127.0.0.1 that speaks the six providers' wire formats.

    Point the gateway's `base_urls` at :meth:`base_urls`. Requests are recorded in arrival
    order (:attr:`requests`); each gets a queued :class:`Scripted` answer for its provider if
    one is pending (:meth:`script`), else the provider's default answer. The knobs
    (`default_usage`, `anthropic_usage`, `chunk_delay`, `stream_chunks`) may be changed at any
    time and apply to the next request. Answers are deterministic given the request order
    (ids count requests), apart from `created` timestamps. Nothing is logged that holds a key.
    """

    def __init__(
        self,
        chunk_delay: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_chunks: int = 5,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        #: Usage of OpenAI-wire chat answers; `cached_tokens` -> `prompt_tokens_details`.
        self.default_usage: dict[str, int] = {"prompt_tokens": 100, "completion_tokens": 20}
        #: Usage of Anthropic Messages answers (all four fields).
        self.anthropic_usage: dict[str, int] = {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        self.chunk_delay = chunk_delay
        self.stream_chunks = stream_chunks
        self._journal = Journal()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._log_filter: _CutStreamFilter | None = None
        self._failure: BaseException | None = None
        self._bound_port: int | None = None

    @property
    def chunk_delay(self) -> float:
        """Seconds waited before each content chunk of a stream (>= 0)."""
        return self._chunk_delay

    @chunk_delay.setter
    def chunk_delay(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"chunk_delay must be >= 0, got {value}")
        self._chunk_delay = float(value)

    @property
    def stream_chunks(self) -> int:
        """How many content chunks a default stream has (>= 1)."""
        return self._stream_chunks

    @stream_chunks.setter
    def stream_chunks(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"stream_chunks must be >= 1, got {value}")
        self._stream_chunks = int(value)

    @property
    def url(self) -> str:
        """The root URL, "http://127.0.0.1:PORT"; RuntimeError when not running."""
        if self._bound_port is None:
            raise RuntimeError("FakeUpstream is not running; call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}"

    def base_url(self, provider: str) -> str:
        """The URL that stands in for `provider`'s default base URL (ValueError if unknown)."""
        return self.url + PREFIXES[check_provider(provider)]

    def base_urls(self) -> dict[str, str]:
        """`base_url` of all six providers, keyed by provider."""
        return {provider: self.base_url(provider) for provider in PROVIDERS}

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received since start or :meth:`clear`, in arrival order."""
        return self._journal.requests()

    def requests_for(self, provider: str) -> list[RecordedRequest]:
        """The recorded requests that went to `provider`."""
        check_provider(provider)
        return [request for request in self.requests if request.provider == provider]

    def script(self, provider: str, *scripts: Scripted) -> None:
        """Queue answers (FIFO) for the next requests to `provider`, whatever their path."""
        self._journal.push_scripts(check_provider(provider), scripts)

    def pending_scripts(self, provider: str) -> int:
        """How many scripted answers for `provider` have not been used yet."""
        return self._journal.pending(check_provider(provider))

    def clear(self) -> None:
        """Forget recorded requests and pending scripts (the server keeps running)."""
        self._journal.clear()

    def start(self) -> FakeUpstream:
        """Bind, serve in a background thread and wait until it accepts connections.

        Raises RuntimeError when already running or when the server fails, TimeoutError when
        it is not up within `start_timeout` seconds.
        """
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        server = self._build_server()  # first: it raises when uvicorn is missing
        sock = self._bind()
        self._bound_port = int(sock.getsockname()[1])
        self._server = server
        self._journal.closing.clear()
        self._failure = None
        name = f"byok-fake-upstream-{next(_THREAD_NUMBERS)}"
        self._log_filter = _CutStreamFilter(name)
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=name, daemon=True)
        self._thread.start()
        self._wait_started()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (bounded by `timeout`); safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._journal.closing.set()
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        if self._log_filter is not None:
            logging.getLogger("uvicorn.error").removeFilter(self._log_filter)
        self._server, self._thread, self._log_filter, self._bound_port = None, None, None, None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._bound_port is not None and self._thread else "stopped"
        return f"FakeUpstream({state})"

    def _bind(self) -> socket.socket:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
        # and without it Nagle holds a stream's second small write for ~40 ms.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    def _build_server(self) -> uvicorn.Server:
        try:
            import uvicorn
        except ImportError as exc:
            raise RuntimeError(
                "FakeUpstream needs uvicorn to serve; install it with "
                "`pip install 'byok_middleware[fastapi]'` (or `pip install uvicorn`)"
            ) from exc
        config = uvicorn.Config(
            build_app(self, self._journal),
            log_config=None,  # leave the host's logging configuration alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            loop="asyncio",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        return uvicorn.Server(config)

    def _serve(self, sock: socket.socket) -> None:
        server = self._server
        if server is None:
            return
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start(); uvicorn may sys.exit
            self._failure = exc
        finally:
            sock.close()

    def _wait_started(self) -> None:
        server, thread = self._server, self._thread
        deadline = time.monotonic() + self.start_timeout
        while server is not None and thread is not None and not server.started:
            if not thread.is_alive():
                self.stop()
                raise RuntimeError("FakeUpstream failed to start") from self._failure
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"FakeUpstream did not start within {self.start_timeout} s")
            time.sleep(0.01)
