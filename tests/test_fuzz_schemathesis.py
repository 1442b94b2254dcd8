"""Schemathesis against a real uvicorn server on 127.0.0.1, driven by the middleware's own
OpenAPI document (``/v1/byok/openapi.json``) and a valid gateway key; bounded examples."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from byok_middleware.keys.schemas import KeyList, KeyView, UsageView
from tests.conftest import Gateway

# Schemathesis' pytest loader (from_fixture) does not run under this pytest; the hypothesis
# strategies of each operation are driven directly instead, with the same checks.
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def test_management_api_conforms_to_its_document(gateway: Gateway) -> None:
    """Every generated call of every operation: no 5xx, a documented status, content type and
    response schema, and the negative/positive data checks."""
    api = schemathesis.openapi.from_url(gateway.url + "/v1/byok/openapi.json")
    key = gateway.tenant("schemathesis")

    @api.auth.auth()
    class GatewayKey:
        """A registered provider, so the ignored-auth check knows this credential is real."""

        def get(self, case: Any, context: Any) -> str:
            return key

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    # The dry run and feedback take free-form model names and sample bodies that a schema cannot
    # pin down (an unknown model is a 400); the series and request log take time ranges whose
    # order and span a schema cannot state (since after until is a 400; tests/test_mission.py);
    # a webhook URL must name a public host (tests/test_webhooks.py). tests/test_first_hour.py
    # checks they are all documented.
    free_form = {
        "/byok/route",
        "/byok/feedback",
        "/byok/usage/series",
        "/byok/requests",
        "/byok/webhooks",
    }
    operations = [result.ok() for result in api.get_all_operations()]
    operations = [operation for operation in operations if operation.path not in free_form]
    assert len(operations) == 10
    for operation in operations:

        @EXAMPLES
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=gateway.url + "/v1")

        check()


def test_document_is_public_and_generated_from_the_schemas(gateway: Gateway) -> None:
    """Served without a gateway key; its shapes are the pydantic models' JSON schemas."""
    response = httpx.get(gateway.url + "/v1/byok/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/v1"}]
    schemas = document["components"]["schemas"]
    assert {"KeyCreate", "KeyUpdate", "KeyView", "KeyList", "UsageView", "ErrorBody"} <= set(
        schemas
    )
    assert schemas["KeyView"]["properties"].keys() == KeyView.model_fields.keys()
    assert "api_key" not in schemas["KeyView"]["properties"]


def test_handlers_answer_in_the_documented_shapes(gateway: Gateway) -> None:
    """The dicts the handlers build validate against the documented response models."""
    view = gateway.add_key("shapes", "openai", "sk-shapes-0000000000000000", label="x")
    KeyView.model_validate(view)
    with gateway.client("shapes") as http:
        KeyList.model_validate(http.get("/v1/byok/providers").json())
        UsageView.model_validate(http.get("/v1/byok/usage", params={"group_by": "day"}).json())
