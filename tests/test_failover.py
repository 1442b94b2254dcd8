"""Failover, key health, limits, dry run and verify end to end: real uvicorn, the fake upstream."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from byok_middleware.proxy.relay import WATCH_AFTER
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

K1 = "sk-tenant-first-111111111111111111111"
K2 = "sk-tenant-second-22222222222222222222"
MESSAGES = [{"role": "user", "content": "Hello"}]
CHAT = {"model": "openai/gpt-4o", "messages": MESSAGES}


class FakeClock:
    """A clock the test moves by hand (the gateway never sleeps on it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def chat(gateway: Gateway, body: dict[str, Any] | None = None) -> httpx.Response:
    with gateway.client("acme") as http:
        return http.post("/v1/chat/completions", json=body or CHAT)


def stream_chat(gateway: Gateway, body: dict[str, Any] | None = None) -> list[str]:
    """The data payloads of a streamed chat, in order."""
    payload = {**(body or CHAT), "stream": True}
    with (
        gateway.client("acme") as http,
        http.stream("POST", "/v1/chat/completions", json=payload) as response,
    ):
        assert response.status_code == 200, response.read()
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def view(gateway: Gateway, key_id: str) -> dict[str, Any]:
    with gateway.client("acme") as http:
        return dict(http.get(f"/v1/byok/providers/{key_id}").json())


def keys_tried(fake: FakeUpstream, provider: str = "openai") -> list[str | None]:
    return [r.api_key for r in fake.requests_for(provider) if r.path != "/models"]


def shows_key_tail(text: str, key: str) -> bool:
    """Whether ``text`` holds the key's last four characters outside its timestamps (whose
    microseconds may hold the same digits by chance)."""
    return key[-4:] in re.sub(r"\d{4}-\d{2}-\d{2}T[0-9:.+Z-]+", "", text)


def two_keys(gateway: Gateway, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    first = gateway.add_key("acme", "openai", K1, priority=1, **extra)
    second = gateway.add_key("acme", "openai", K2, priority=2)
    return first, second


def test_401_marks_the_key_invalid_and_the_next_key_serves(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """401: the next key serves (attempts 2, its key id); the first is invalid and then skipped."""
    first, second = two_keys(gateway)
    fake.script("openai", Scripted.invalid_key("openai"))
    response = chat(gateway)
    assert response.status_code == 200
    meta = response.json()["xantly_metadata"]
    assert (meta["key_id"], meta["attempts"], meta["cost_attribution"]) == (second["id"], 2, "byok")
    assert response.headers["x-byok-attempts"] == "2"
    shown = view(gateway, first["id"])
    assert shown["status"] == "invalid"
    assert shown["last_error"].startswith("401 from openai at ")
    assert not shows_key_tail(json.dumps(shown), K1)
    chat(gateway)
    assert keys_tried(fake) == [K1, K2, K2]


def test_rotation_clears_an_invalid_key(gateway: Gateway, fake: FakeUpstream) -> None:
    """PUT api_key on an invalid key makes it active and first again."""
    first, _ = two_keys(gateway)
    fake.script("openai", Scripted.invalid_key("openai"))
    chat(gateway)
    with gateway.client("acme") as http:
        rotated = http.put(f"/v1/byok/providers/{first['id']}", json={"api_key": K1 + "x"}).json()
    assert rotated["status"] == "active"
    assert rotated["last_error"] is None
    chat(gateway)
    assert keys_tried(fake)[-1] == K1 + "x"


def test_429_cools_the_key_down_until_retry_after(start_gateway: Any, fake: FakeUpstream) -> None:
    """429 + retry-after 30: the key is skipped until the injected clock passes the cooldown."""
    clock = FakeClock()
    gateway = start_gateway(clock=clock)
    first, second = two_keys(gateway)
    fake.script("openai", Scripted.rate_limited("openai", retry_after=30))
    assert chat(gateway).json()["xantly_metadata"]["key_id"] == second["id"]
    shown = view(gateway, first["id"])
    assert shown["status"] == "cooling_down"
    assert datetime.fromisoformat(shown["cooldown_until"]) == clock.now + timedelta(seconds=30)
    assert shown["last_error"].startswith("429 from openai")

    clock.advance(29)
    assert chat(gateway).json()["xantly_metadata"]["key_id"] == second["id"]
    clock.advance(2)
    assert view(gateway, first["id"])["status"] == "active"  # the cooldown is over
    served = chat(gateway).json()["xantly_metadata"]
    assert (served["key_id"], served["attempts"]) == (first["id"], 1)
    assert keys_tried(fake) == [K1, K2, K2, K1]
    assert view(gateway, first["id"])["cooldown_until"] is None


@pytest.mark.parametrize(
    ("provider", "key_a", "key_b", "script", "what"),
    [
        ("openai", K1, K2, Scripted.server_error("openai"), "500"),
        (
            "anthropic",
            "sk-ant-first-1111111111",
            "sk-ant-second-222222222",
            Scripted.overloaded(),
            "529",
        ),
    ],
)
def test_5xx_and_529_fail_over_without_marking_the_key(
    gateway: Gateway,
    fake: FakeUpstream,
    provider: str,
    key_a: str,
    key_b: str,
    script: Scripted,
    what: str,
) -> None:
    """A sick provider is not a bad key: next key serves, status stays active, last_error noted."""
    first = gateway.add_key("acme", provider, key_a, priority=1)
    second = gateway.add_key("acme", provider, key_b, priority=2)
    fake.script(provider, script)
    model = "openai/gpt-4o" if provider == "openai" else "anthropic/claude-sonnet-4-5"
    response = chat(gateway, {"model": model, "messages": MESSAGES, "max_tokens": 20})
    assert response.status_code == 200, response.text
    meta = response.json()["xantly_metadata"]
    assert (meta["key_id"], meta["attempts"], meta["provider_used"]) == (second["id"], 2, provider)
    shown = view(gateway, first["id"])
    assert shown["status"] == "active"
    assert shown["last_error"].startswith(f"{what} from {provider}")
    assert shown["last_used_at"] is None
    assert view(gateway, second["id"])["last_used_at"] is not None


def test_timeout_fails_over(start_gateway: Any, fake: FakeUpstream) -> None:
    """An upstream slower than upstream_timeout: the next key serves."""
    gateway = start_gateway(upstream_timeout=0.5)
    first, second = two_keys(gateway)
    fake.script("openai", Scripted(delay=2.0))
    response = chat(gateway)
    meta = response.json()["xantly_metadata"]
    assert (meta["key_id"], meta["attempts"]) == (second["id"], 2)
    assert view(gateway, first["id"])["status"] == "active"
    assert view(gateway, first["id"])["last_error"].startswith("timeout from openai")


def test_every_candidate_failing_returns_the_last_error_with_attempts(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """Two keys and the platform key all 500: the client gets a 500 with x-byok-attempts 3."""
    two_keys(gateway)
    fake.script("openai", *[Scripted.server_error("openai")] * 3)
    response = chat(gateway)
    assert response.status_code == 500
    assert response.headers["x-byok-attempts"] == "3"
    assert keys_tried(fake) == [K1, K2, PLATFORM_OPENAI_KEY]


@pytest.mark.parametrize(
    "script",
    [
        Scripted.server_error("openai"),
        Scripted.invalid_key("openai"),
        Scripted.rate_limited("openai", retry_after=5),
        # 200 with SSE headers, then the body ends before any event
        Scripted(body=b"", headers={"content-type": "text/event-stream"}),
    ],
)
def test_stream_fails_over_before_its_first_event(
    gateway: Gateway, fake: FakeUpstream, script: Scripted
) -> None:
    """A stream that errors, or answers 200 and ends before its first event, fails over."""
    _, second = two_keys(gateway)
    fake.script("openai", script)
    events = stream_chat(gateway)
    assert events[-1] == "[DONE]"
    meta = json.loads(events[-2])["xantly_metadata"]
    assert (meta["key_id"], meta["attempts"]) == (second["id"], 2)
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, events[:-2])
        if c.get("choices")
    )
    assert text == "Hello from the fake openai."


def test_stream_cut_mid_answer_ends_with_an_error_event(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """Once the first event went out there is no failover: an OpenAI-shaped error event, then
    [DONE], ends it, and the ledger row names the key that served it."""
    first, _ = two_keys(gateway)
    fake.script("openai", Scripted(stream=True, cut_after=2))
    events = stream_chat(gateway)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "stream_interrupted"
    assert keys_tried(fake) == [K1]
    with gateway.client("acme") as http:
        usage = http.get("/v1/byok/usage", params={"group_by": "attribution"}).json()
    assert usage["total"]["requests"] == 1
    assert [g["group"] for g in usage["data"]] == ["byok"]
    assert view(gateway, first["id"])["status"] == "active"


def test_always_use_fails_closed(gateway: Gateway, fake: FakeUpstream) -> None:
    """An always_use key that is rejected never falls back to the platform key."""
    key = gateway.add_key("acme", "openai", K1, always_use=True)
    fake.script("openai", Scripted.invalid_key("openai"))
    response = chat(gateway)
    assert response.status_code == 401
    assert response.headers["x-byok-attempts"] == "1"
    again = chat(gateway)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "no_provider_key"
    assert "always_use" in again.json()["error"]["message"]
    assert key["id"] in again.json()["error"]["message"]
    assert again.headers["x-byok-attempts"] == "0"
    assert keys_tried(fake) == [K1]


def test_platform_fallback_off(start_gateway: Any, fake: FakeUpstream) -> None:
    """allow_platform_fallback=false: no tenant key is a 400; a failing key is not rescued."""
    gateway = start_gateway(allow_platform_fallback=False)
    response = chat(gateway)
    assert response.status_code == 400
    assert "disabled by the operator" in response.json()["error"]["message"]
    gateway.add_key("acme", "openai", K1)
    fake.script("openai", Scripted.server_error("openai"))
    assert chat(gateway).status_code == 500
    assert keys_tried(fake) == [K1]


def test_rpm_limit_gives_a_429_naming_it(start_gateway: Any, fake: FakeUpstream) -> None:
    """rpm 2: the third request within the minute is a 429 that says rpm."""
    gateway = start_gateway(allow_platform_fallback=False)
    gateway.add_key("acme", "openai", K1, rpm=2)
    assert [chat(gateway).status_code for _ in range(2)] == [200, 200]
    third = chat(gateway)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert "rpm limit reached (2 of 2" in third.json()["error"]["message"]
    assert len(keys_tried(fake)) == 2


def test_tpm_limit_applies_to_the_next_request(start_gateway: Any, fake: FakeUpstream) -> None:
    """tpm 100: a 120-token call finishes, the next request finds the key at its limit."""
    gateway = start_gateway(allow_platform_fallback=False)
    gateway.add_key("acme", "openai", K1, tpm=100)
    assert chat(gateway).status_code == 200
    second = chat(gateway)
    assert second.status_code == 429
    assert "tpm limit reached (120 of 100" in second.json()["error"]["message"]


def test_budget_exceeded_falls_back_to_the_platform(gateway: Gateway, fake: FakeUpstream) -> None:
    """A key past its monthly budget is skipped: the platform key serves (attribution xantly)."""
    key = gateway.add_key("acme", "openai", K1, monthly_budget_usd=0.0004)
    small = {**CHAT, "max_tokens": 5}  # a worst case (about $0.00025) the budget can hold
    assert chat(gateway, small).json()["xantly_metadata"]["key_id"] == key["id"]
    meta = chat(gateway, small).json()["xantly_metadata"]
    assert (meta["cost_attribution"], meta["key_id"]) == ("xantly", None)
    with gateway.client("acme") as http:
        route = http.get("/v1/byok/route", params={"model": "openai/gpt-4o"}).json()
    (shown,) = route["keys"]
    assert shown["usable"] is False
    assert shown["skipped_reason"].startswith("monthly budget reached")
    assert shown["limits"]["monthly_budget_usd"]["spent"] == pytest.approx(0.00045)


def test_equal_priorities_share_the_load(gateway: Gateway, fake: FakeUpstream) -> None:
    """Two keys of the same priority serve in turn."""
    gateway.add_key("acme", "openai", K1)
    gateway.add_key("acme", "openai", K2)
    for _ in range(4):
        chat(gateway)
    tried = keys_tried(fake)
    assert sorted(tried) == sorted([K1, K2, K1, K2])
    assert tried[0] != tried[1]
    assert tried[2] != tried[3]


def test_dry_run_explains_the_choice_without_calling_upstream(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """GET /byok/route: the key that would serve, each key's verdict, the fallback policy."""
    first, second = two_keys(gateway)
    fake.script("openai", Scripted.invalid_key("openai"))
    chat(gateway)
    fake.clear()
    with gateway.client("acme") as http:
        route = http.get("/v1/byok/route", params={"model": "gpt-4o"}).json()
    assert route["would_use"]["key_id"] == second["id"]
    assert route["would_use"]["provider"] == "openai"
    assert [c["cost_attribution"] for c in route["candidates"]] == ["byok", "xantly"]
    by_id = {k["id"]: k for k in route["keys"]}
    assert by_id[first["id"]]["usable"] is False
    assert by_id[first["id"]]["skipped_reason"].startswith("invalid")
    assert by_id[second["id"]]["priority"] == 2
    assert route["platform_fallback"]["providers"] == [
        {"provider": "openai", "allowed": True, "reason": None}
    ]
    assert fake.requests == []


def test_dry_run_of_an_unroutable_model_is_a_400(gateway: Gateway) -> None:
    """Unknown bare names are refused as in the proxy."""
    with gateway.client("acme") as http:
        response = http.get("/v1/byok/route", params={"model": "no-such-model"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_verify_updates_the_status(gateway: Gateway, fake: FakeUpstream) -> None:
    """verify lists models with the key: invalid on 401, active again once it works."""
    key = gateway.add_key("acme", "openai", K1)
    fake.script("openai", Scripted.invalid_key("openai"))
    with gateway.client("acme") as http:
        rejected = http.post(f"/v1/byok/providers/{key['id']}/verify")
        assert rejected.status_code == 200
        assert rejected.json()["status"] == "invalid"
        assert not shows_key_tail(rejected.text, K1)
        accepted = http.post(f"/v1/byok/providers/{key['id']}/verify").json()
        assert accepted["status"] == "active"
        assert accepted["last_error"] is None
        assert http.post("/v1/byok/providers/key_nope/verify").status_code == 404
    assert [r.path for r in fake.requests_for("openai")] == ["/models", "/models"]


@pytest.mark.parametrize(
    ("model", "provider", "api_key"),
    [
        ("gpt-4o", "openai", K1),
        ("llama-3.3-70b-versatile", "groq", "gsk_tenant_3333333333333333"),
        ("claude-sonnet-4-5", "anthropic", "sk-ant-tenant-444444444444"),
    ],
)
def test_bare_model_names(
    gateway: Gateway, fake: FakeUpstream, model: str, provider: str, api_key: str
) -> None:
    """A bare name is served by the provider known to serve it, named in provider_used."""
    key = gateway.add_key("acme", provider, api_key)
    response = chat(gateway, {"model": model, "messages": MESSAGES, "max_tokens": 20})
    assert response.status_code == 200, response.text
    meta = response.json()["xantly_metadata"]
    assert (meta["provider_used"], meta["key_id"], meta["model_used"]) == (
        provider,
        key["id"],
        model,
    )
    (received,) = fake.requests_for(provider)
    assert received.api_key == api_key


def test_a_json_answer_to_a_stream_request_is_replayed_once(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """An upstream that answers a stream request with one JSON completion is called once and
    the client still gets a well-formed stream with the metadata."""
    completion = {
        "id": "chatcmpl-json",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "In one piece."},
             "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }  # fmt: skip
    fake.script("openai", Scripted(json=completion))
    events = stream_chat(gateway)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "In one piece."
    assert chunks[-1]["xantly_metadata"]["cost_usd"] > 0
    assert len(fake.requests_for("openai")) == 1


def _first_rows(gateway: Gateway, *, within: float) -> list[dict[str, Any]]:
    """The tenant's ledger rows once there are any, polling for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        with gateway.client("acme") as http:
            rows = http.get("/v1/byok/requests").json()["data"]
        time.sleep(0.05)
    return rows


def test_a_client_leaving_before_the_answer_cancels_the_upstream_call(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A client that gives up while the provider is still thinking is noticed at once: the
    upstream call is cancelled (not held to the upstream timeout) and recorded as a 499."""
    fake.script("openai", Scripted(delay=8))
    with gateway.client("acme") as http, contextlib.suppress(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=CHAT, timeout=0.5)
    rows = _first_rows(gateway, within=3)
    assert [row["status_code"] for row in rows] == [499]


def test_a_client_leaving_a_slow_stream_is_recorded_as_a_499(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """A stream whose chunks come a second apart: the client reads the first and leaves; the
    relay stops (the watcher starts after ``WATCH_AFTER``) and the row says 499."""
    fake.script("openai", Scripted(chunk_delay=1.0))
    started = time.monotonic()
    with (
        gateway.client("acme") as http,
        http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        assert response.status_code == 200
        next(response.iter_lines())
    rows = _first_rows(gateway, within=5)
    assert [row["status_code"] for row in rows] == [499]
    assert time.monotonic() - started < 5


def test_a_client_leaving_before_the_watcher_starts_is_still_noticed(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """The disconnect watcher starts only after ``WATCH_AFTER`` (quick answers never pay for
    it); a client gone before then is noticed when it starts, not at the upstream timeout."""
    fake.script("openai", Scripted(delay=8))
    leave_after = WATCH_AFTER / 3
    started = time.monotonic()
    with gateway.client("acme") as http, contextlib.suppress(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=CHAT, timeout=leave_after)
    rows = _first_rows(gateway, within=3)
    assert [row["status_code"] for row in rows] == [499]
    assert time.monotonic() - started < 3
