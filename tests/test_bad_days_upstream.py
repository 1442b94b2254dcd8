"""Bad days upstream (issue 18, items 6, 8, 9, 7 in part): headers by allow-list, a stream of
keep-alive comments fails over, an endless body is cut at the cap with memory bounded, and
verify wants a well-formed 2xx. A hostile upstream: a raw HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from byok_middleware.gateway.headers import MAX_RELAYED, relay_headers
from byok_middleware.gateway.transport import AiohttpUpstream, BodyTooLarge, UpstreamResponse
from byok_middleware.gateway.upstream import await_first_event
from byok_middleware.redaction import Redactor
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

TENANT_KEY = "sk-tenant-hostile-0123456789abcdef"
CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_only_allowed_headers_with_well_formed_clean_values_are_relayed() -> None:
    """Rate-limit figures, ids, retry-after, processing time: relayed when well formed; a key in
    any of them, odd values and every other header: dropped."""
    redactor = Redactor([TENANT_KEY, PLATFORM_OPENAI_KEY])
    upstream = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-reset-tokens": "6m0.5s",
        "x-ratelimit-remaining-tokens": PLATFORM_OPENAI_KEY,
        "x-ratelimit-reset-requests": "soon\r\nset-cookie: a=b",
        "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT",
        "retry-after-ms": "1500",
        "openai-processing-ms": TENANT_KEY,
        "x-request-id": "req_abc123",
        "request-id": "sk-proj-abcdefghijklmnop",
        "set-cookie": "session=1",
        "openai-organization": "acme-corp",
        "server": "cloudflare",
        "location": "https://evil.example/",
        "content-type": "application/json",
    }
    relayed = dict(relay_headers(upstream, redactor))
    assert relayed == {
        b"x-ratelimit-limit-requests": b"10000",
        b"x-ratelimit-reset-tokens": b"6m0.5s",
        b"retry-after": b"Wed, 21 Oct 2015 07:28:00 GMT",
        b"retry-after-ms": b"1500",
        b"x-request-id": b"req_abc123",
    }
    assert relay_headers({"retry-after": "1.5"}, redactor) == []
    assert relay_headers({"retry-after": "30"}, redactor) == [(b"retry-after", b"30")]
    many = {f"x-ratelimit-n{i}": str(i) for i in range(100)}
    assert len(relay_headers(many, redactor)) == MAX_RELAYED


class HostileUpstream:
    """Answers by the key it is sent: the tenant key gets the hostile ``mode``, any other key
    a normal one-event SSE answer (so failover to the platform key can be seen)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.hostile_calls = 0
        self.normal_calls = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(self._cancel_handlers())
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _cancel_handlers(self) -> None:
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            hostile = TENANT_KEY.encode() in head
            if not hostile:
                self.normal_calls += 1
                body = b'data: {"choices":[{"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
                return
            self.hostile_calls += 1
            if self.mode == "keep-alive":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
                for _ in range(60):  # 30 s of comments at most
                    writer.write(b": keep-alive\n\n")
                    await writer.drain()
                    await asyncio.sleep(0.5)
            elif self.mode == "drip":  # a length announced, then a byte every 0.2 s
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 1000\r\n\r\n"
                )
                for _ in range(100):  # 20 s at most
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.2)
            elif self.mode == "small":  # a whole 4 KiB answer, sent with its headers
                body = b'{"a":"' + b"x" * 4090 + b'"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
            elif self.mode == "declared-huge":  # 200 MB announced; the first MB sent
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 209715200\r\n\r\n" + b"x" * (1024 * 1024)
                )
                await writer.drain()
                await asyncio.sleep(5)
            else:  # "huge": 200 MB of JSON-ish bytes, no length announced
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
                chunk = b'{"a":"' + b"x" * (1024 * 1024)
                for _ in range(200):
                    writer.write(chunk)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()


async def _send_hostile(client: AiohttpUpstream, hostile: HostileUpstream) -> UpstreamResponse:
    """A chat call with the tenant key, which the hostile upstream answers in its mode."""
    return await client.send(
        "POST", hostile.url + "/chat/completions",
        headers={"authorization": f"Bearer {TENANT_KEY}"}, content=b"{}",
    )  # fmt: skip


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileUpstream]:
    with HostileUpstream(request.param) as upstream:
        yield upstream


@pytest.mark.parametrize("hostile", ["keep-alive"], indirect=True)
def test_an_upstream_sending_only_keep_alive_comments_times_out_and_fails_over(
    start_gateway: Callable[..., Gateway], hostile: HostileUpstream
) -> None:
    """Comments every 0.5 s do not reset the first-event deadline (1 s here): the platform key
    answers the stream, well within the time the comments would have lasted."""
    gateway = start_gateway(base_urls={"openai": hostile.url}, first_event_timeout=1.0)
    gateway.add_key("acme", "openai", TENANT_KEY)
    started = time.monotonic()
    with gateway.client("acme") as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200, response.text
    assert '"content":"ok"' in response.text and "data: [DONE]" in response.text
    assert time.monotonic() - started < 5
    assert (hostile.hostile_calls, hostile.normal_calls) == (1, 1)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("hostile", ["huge"], indirect=True)
def test_a_200_mb_upstream_body_is_a_502_with_memory_bounded(
    start_gateway: Callable[..., Gateway], hostile: HostileUpstream
) -> None:
    """BYOK_MAX_UPSTREAM_BODY_BYTES (8 MiB here) stops the read: a 502, and the process grows
    by far less than the 200 MB the upstream offered."""
    gateway = start_gateway(
        base_urls={"openai": hostile.url},
        platform_keys={},
        max_upstream_body_bytes=8 * 1024 * 1024,
    )
    gateway.add_key("acme", "openai", TENANT_KEY)
    before = _rss_mib()
    with gateway.client("acme") as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    grown = _rss_mib() - before
    assert response.status_code == 502, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert grown < 64, f"RSS grew by {grown:.0f} MiB"


@pytest.mark.parametrize("hostile", ["huge"], indirect=True)
async def test_the_transport_reads_at_most_the_cap(hostile: HostileUpstream) -> None:
    """aread() raises BodyTooLarge past the cap instead of buffering the rest."""
    client = AiohttpUpstream(max_body_bytes=1024 * 1024)
    try:
        response = await _send_hostile(client, hostile)
        with pytest.raises(BodyTooLarge):
            await response.aread()
        await response.aclose()
    finally:
        await client.aclose()


@pytest.mark.parametrize("hostile", ["small"], indirect=True)
async def test_a_body_that_arrived_whole_is_still_held_to_the_cap(hostile: HostileUpstream) -> None:
    """A short answer is all there by the time it is read (no deadline timer is armed for it):
    it is returned whole under the cap and refused over it."""
    for cap, fits in ((8192, True), (1024, False)):
        client = AiohttpUpstream(max_body_bytes=cap)
        try:
            response = await _send_hostile(client, hostile)
            await asyncio.sleep(0.05)  # the rest of the answer lands, if it came apart
            if fits:
                body = await response.aread()
                assert len(body) == 4098 and body.startswith(b'{"a":"xxx') and body.endswith(b'"}')
            else:
                with pytest.raises(BodyTooLarge):
                    await response.aread()
            await response.aclose()
        finally:
            await client.aclose()


@pytest.mark.parametrize("hostile", ["declared-huge"], indirect=True)
async def test_a_declared_length_past_the_cap_is_refused_before_reading(
    hostile: HostileUpstream,
) -> None:
    """A Content-Length above the cap: BodyTooLarge at once, nothing buffered."""
    client = AiohttpUpstream(max_body_bytes=1024 * 1024)
    try:
        response = await _send_hostile(client, hostile)
        started = time.monotonic()
        with pytest.raises(BodyTooLarge):
            await response.aread()
        assert time.monotonic() - started < 1
        await response.aclose()
    finally:
        await client.aclose()


@pytest.mark.parametrize("hostile", ["drip"], indirect=True)
async def test_a_body_dripping_in_is_cut_at_the_exchange_deadline(
    hostile: HostileUpstream,
) -> None:
    """A declared body sent a byte at a time: aread() raises httpx.ReadTimeout at the client's
    deadline although bytes keep coming (no single read waits long enough to time out)."""
    client = AiohttpUpstream(deadline=1.0)
    try:
        response = await _send_hostile(client, hostile)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()
        assert time.monotonic() - started < 3
        await response.aclose()
    finally:
        await client.aclose()


@pytest.mark.parametrize("hostile", ["keep-alive"], indirect=True)
async def test_the_first_event_wait_is_not_reset_by_comments(hostile: HostileUpstream) -> None:
    """await_first_event raises httpx.ReadTimeout at its limit although bytes keep coming."""
    client = AiohttpUpstream()
    try:
        response = await _send_hostile(client, hostile)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await await_first_event(response, limit=1.2)
        assert 1.0 < time.monotonic() - started < 3
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [(200, "<html>captive portal</html>", "text/html"), (302, "", "text/html"),
     (200, "[1, 2]", "application/json")],
)  # fmt: skip
def test_verify_needs_a_well_formed_2xx_json_answer(
    gateway: Gateway, fake: object, status: int, body: str, content_type: str
) -> None:
    """An HTML 200, a redirect or a JSON non-object is no verdict: 502, status unchanged."""
    from byok_middleware.testing import FakeUpstream, Scripted

    assert isinstance(fake, FakeUpstream)
    view = gateway.add_key("acme", "openai", TENANT_KEY)
    with gateway.client("acme") as client:
        client.put(f"/v1/byok/providers/{view['id']}", json={"priority": 2})
        fake.script(
            "openai",
            Scripted(status=status, body=body, headers={"content-type": content_type}),
        )
        response = client.post(f"/v1/byok/providers/{view['id']}/verify")
        assert response.status_code == 502, response.text
        after = client.get(f"/v1/byok/providers/{view['id']}").json()
    assert after["status"] == "active" and after["last_error"]
