"""OpenAI ``chat.completions`` request -> Anthropic Messages request (sans-I/O).

Whatever Anthropic cannot honour is refused with a 400 naming the parameter, never silently
dropped or clamped: a caller that asked for ``n=3`` or ``temperature=1.5`` must learn that this
upstream cannot do it. Parameters that change nothing about the answer (``store``, ``metadata``,
``service_tier``, ``stream_options``) are ignored. Message conversion lives in
:mod:`byok_middleware.providers.anthropic_messages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.providers.anthropic_messages import (
    JSON_TOOL_NAME,
    translate_messages,
    unsupported,
    wrong_type,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "JSON_TOOL_NAME",
    "REASONING_BUDGETS",
    "TOOL_CHOICE_TYPES",
    "to_messages_request",
    "uses_json_tool",
]

DEFAULT_MAX_TOKENS = 4096
# Thinking budgets per OpenAI reasoning_effort; 1024 is Anthropic's minimum budget.
REASONING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
_MIN_THINKING_BUDGET = 1024
# OpenAI tool_choice string -> Anthropic tool_choice type.
TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none"}
_JSON_FORMATS = ("json_schema", "json_object")
_JSON_TOOL_DESCRIPTION = "Respond with the requested JSON object as this tool's input."


def uses_json_tool(request: Mapping[str, Any]) -> bool:
    """Whether the OpenAI *request* asks for JSON output, emulated with the forced ``json_response``
    tool. Pass the result as ``json_mode`` to the response functions, which then return that
    tool's input as the message ``content`` instead of a tool call."""
    response_format = request.get("response_format")
    return isinstance(response_format, Mapping) and response_format.get("type") in _JSON_FORMATS


def to_messages_request(
    body: Mapping[str, Any],
    upstream_model: str,
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """Translate an OpenAI chat request body to an Anthropic ``/v1/messages`` body.

    ``max_tokens`` is always set (``default_max_tokens`` when the client gave none, plus the
    thinking budget when ``reasoning_effort`` asks for one). A JSON ``response_format`` becomes a
    forced ``json_response`` tool: see :func:`uses_json_tool`. The input is not modified.

    Raises :class:`InvalidRequest` (400, ``param`` set) for malformed input and for every
    parameter or value Anthropic cannot honour.
    """
    _refuse_unsupported(body)
    system, messages = translate_messages(body.get("messages"))
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = _max_tokens(body)
    out["max_tokens"] = default_max_tokens if max_tokens is None else max_tokens
    _copy_sampling(body, out)
    _set_tools(body, out)
    _set_response_format(body, out)
    _declare_history_tools(out)
    _set_thinking(body, out, explicit_max_tokens=max_tokens is not None)
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise wrong_type("user", "a string")
        if user:
            out["metadata"] = {"user_id": user}
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise wrong_type("stream", "a boolean")
        out["stream"] = stream
    return out


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    def refuse(param: str, why: str) -> None:
        raise unsupported(f"Anthropic models do not support '{param}' ({why}).", param)

    n = body.get("n")
    if n is not None and n != 1:
        refuse("n", "only one choice per request")
    if body.get("logprobs"):
        refuse("logprobs", "no token log probabilities")
    if body.get("top_logprobs"):
        refuse("top_logprobs", "no token log probabilities")
    if body.get("logit_bias"):
        refuse("logit_bias", "no token biasing")
    for penalty in ("presence_penalty", "frequency_penalty"):
        if body.get(penalty):
            refuse(penalty, "no repetition penalties")
    if body.get("seed") is not None:
        refuse("seed", "no deterministic sampling")
    if body.get("audio") is not None:
        refuse("audio", "no audio output")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        refuse("modalities", "text output only")
    if body.get("prediction") is not None:
        refuse("prediction", "no predicted outputs")
    if body.get("web_search_options") is not None:
        refuse("web_search_options", "no OpenAI web search")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            refuse(legacy, "use 'tools' and 'tool_choice'")


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for param in ("max_completion_tokens", "max_tokens"):
        value = body.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong_type(param, "an integer")
        if value < 1:
            raise InvalidRequest(
                f"'{param}' must be at least 1.", param=param, code="invalid_value"
            )
        return value
    return None


def _number(body: Mapping[str, Any], param: str) -> float | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(param, "a number")
    return float(value)


def _copy_sampling(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    temperature = _number(body, "temperature")
    if temperature is not None:
        # OpenAI allows 0..2, Anthropic 0..1; clamping would silently change the sampling asked for.
        if not 0 <= temperature <= 1:
            raise InvalidRequest(
                "'temperature' must be between 0 and 1 for Anthropic models.",
                param="temperature",
                code="unsupported_value",
            )
        out["temperature"] = body["temperature"]
    top_p = _number(body, "top_p")
    if top_p is not None:
        if not 0 <= top_p <= 1:
            raise InvalidRequest(
                "'top_p' must be between 0 and 1.", param="top_p", code="invalid_value"
            )
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise wrong_type("stop", "a string or a list of strings")
    if any(not s.strip() for s in stops):
        raise InvalidRequest(
            "Anthropic rejects empty or whitespace-only stop sequences.",
            param="stop",
            code="unsupported_value",
        )
    if stops:
        out["stop_sequences"] = stops


def _set_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    raw_tools = body.get("tools")
    tools = [] if raw_tools is None else _translate_tools(raw_tools)
    choice = _translate_tool_choice(body.get("tool_choice"), has_tools=bool(tools))
    if not tools:
        return
    out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    # Anthropic's flag is OpenAI's inverted and lives on tool_choice, which 'none' cannot carry.
    if body.get("parallel_tool_calls") is False:
        choice = out.setdefault("tool_choice", {"type": "auto"})
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True


def _translate_tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise wrong_type("tools", "an array")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise wrong_type(param, "an object")
        if tool.get("type") != "function":
            raise unsupported("Anthropic models only support 'function' tools.", f"{param}.type")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise wrong_type(f"{param}.function.name", "a string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise wrong_type(f"{param}.function.parameters", "an object")
        converted: dict[str, Any] = {
            "name": function["name"],
            "input_schema": dict(parameters or {"type": "object", "properties": {}}),
        }
        if function.get("description"):
            converted["description"] = function["description"]
        if "cache_control" in tool:
            converted["cache_control"] = tool["cache_control"]
        tools.append(converted)
    return tools


def _translate_tool_choice(raw: Any, *, has_tools: bool) -> dict[str, Any] | None:
    if raw is None or (not has_tools and raw in ("auto", "none")):
        return None
    if not has_tools:
        raise InvalidRequest(
            "'tool_choice' requires 'tools'.", param="tool_choice", code="invalid_value"
        )
    if isinstance(raw, str) and raw in TOOL_CHOICE_TYPES:
        return {"type": TOOL_CHOICE_TYPES[raw]}
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        function = raw.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise unsupported(
        "'tool_choice' must be 'auto', 'required', 'none' or a named function for Anthropic.",
        "tool_choice",
    )


def _set_response_format(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return
    if kind not in _JSON_FORMATS:
        raise unsupported("Unsupported 'response_format' type.", "response_format")
    # Anthropic has no JSON mode here: a forced tool whose input is the JSON answer emulates both
    # json_schema (with the caller's schema) and json_object (with an open object schema).
    schema: Any = {"type": "object"}
    description = _JSON_TOOL_DESCRIPTION
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise wrong_type("response_format.json_schema", "an object")
        schema = spec.get("schema") or schema
        if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
            raise unsupported(
                "Anthropic needs an object schema at the top level.", "response_format"
            )
        schema = dict(schema)
        description = spec.get("description") or description
    tools = out.setdefault("tools", [])
    if any(tool["name"] == JSON_TOOL_NAME for tool in tools):
        raise unsupported(
            f"The tool name '{JSON_TOOL_NAME}' is reserved with a JSON response_format.", "tools"
        )
    choice = out.get("tool_choice") or {"type": "auto" if tools else "none"}
    tools.append({"name": JSON_TOOL_NAME, "description": description, "input_schema": schema})
    if choice["type"] == "none":
        out["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}
    elif choice["type"] == "auto":
        # The model may call the caller's tools, but its answer must come through the JSON tool.
        out["tool_choice"] = {**choice, "type": "any"}


def _declare_history_tools(out: dict[str, Any]) -> None:
    """Anthropic rejects tool_use blocks in the history when no tools are declared; OpenAI does
    not. Declare the tools the history used, and forbid calling them (the caller offered none)."""
    if out.get("tools"):
        return
    names: dict[str, None] = {}
    for message in out["messages"]:
        for block in message["content"]:
            if block["type"] == "tool_use":
                names[block["name"]] = None
    if names:
        schema = {"type": "object", "properties": {}}
        out["tools"] = [{"name": name, "input_schema": schema} for name in names]
        out["tool_choice"] = {"type": "none"}


def _set_thinking(
    body: Mapping[str, Any], out: dict[str, Any], *, explicit_max_tokens: bool
) -> None:
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    if effort not in REASONING_BUDGETS:
        raise InvalidRequest(
            "'reasoning_effort' must be one of none, minimal, low, medium, high.",
            param="reasoning_effort",
            code="invalid_value",
        )
    if _ends_in_tool_loop(out["messages"]):
        # Thinking in a tool loop needs the signed thinking blocks of the last assistant turn,
        # which OpenAI clients cannot send back: answer this turn without thinking.
        return
    budget = REASONING_BUDGETS[effort]
    if explicit_max_tokens:
        # OpenAI's max_completion_tokens includes reasoning, so the caller's cap holds.
        budget = min(budget, out["max_tokens"] - 1)
        if budget < _MIN_THINKING_BUDGET:
            raise InvalidRequest(
                "With 'reasoning_effort', Anthropic needs more than "
                f"{_MIN_THINKING_BUDGET} max tokens.",
                param="max_tokens",
                code="unsupported_value",
            )
    else:
        out["max_tokens"] += budget
    choice = out.get("tool_choice", {})
    if choice.get("type") in ("any", "tool"):
        param = "response_format" if uses_json_tool(body) else "tool_choice"
        raise unsupported("Anthropic cannot force tool use with 'reasoning_effort'.", param)
    if out.get("temperature", 1) != 1:
        raise unsupported(
            "Anthropic allows no 'temperature' with 'reasoning_effort'.", "temperature"
        )
    if out.get("top_p", 1) < 0.95:
        raise unsupported("Anthropic needs 'top_p' >= 0.95 with 'reasoning_effort'.", "top_p")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _ends_in_tool_loop(messages: list[dict[str, Any]]) -> bool:
    for message in reversed(messages):
        if message["role"] == "assistant":
            return any(block["type"] == "tool_use" for block in message["content"])
    return False
