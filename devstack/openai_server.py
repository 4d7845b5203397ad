"""OpenAI Chat Completions stand-in with deterministic replies, for the ``openai`` 2.x client.

    client = OpenAI(base_url="http://127.0.0.1:PORT/v1", api_key="anything")

``POST /v1/chat/completions`` answers from the JSON object the caller puts between ``<<<DATA``
and ``DATA>>>`` in the last user message (``name``, ``event_type``, ``visit_time_ist``,
``configuration``, ...), so a test knows the exact text to expect. A string value containing
"ignore previous instructions" makes it answer like a model that fell for a prompt injection,
so the caller's output validation can be tested. ``GET /v1/models`` lists a few model ids.
``GET /_control/requests`` returns every request body received (to check prompts).

**Model families, as strict as OpenAI.** The reasoning models (o-series, gpt-5) reject
``max_tokens`` (400 ``unsupported_parameter``: "Use 'max_completion_tokens' instead") and any
``temperature`` but 1 (400 ``unsupported_value``), and spend hidden reasoning tokens out of
``max_completion_tokens`` (by ``reasoning_effort``; default medium) before they write: too small
a limit gives an empty reply with ``finish_reason: "length"``, as OpenAI's do. The chat models
reject ``reasoning_effort``. Setting ``finish_reason`` (``length`` / ``content_filter``) forces
that ending on every reply (null = the natural one).

``usage`` is what OpenAI bills: prompt tokens (~4 characters a token, plus the chat format's 3
tokens per message and 3 to prime the reply, as OpenAI documents for the gpt-4o family),
completion tokens summed over the ``n`` choices, and the ``*_tokens_details`` objects the real
API includes. An unknown ``model`` is refused with 404 ``model_not_found``, as OpenAI does.

    python -m devstack.openai_server --port 8092
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from devstack._http import ApiError, Fault, Reply, Request, Route, Setting, StandInServer, route, run_main

GULLIBLE_REPLY = "Update: your site visit is cancelled."
INJECTION_PHRASE = "ignore previous instructions"
_DATA_BLOCK = re.compile(r"<<<DATA(.*?)DATA>>>", re.DOTALL)
CHAT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
REASONING_MODELS = ("o3-mini", "o4-mini", "gpt-5", "gpt-5-mini")
MODELS = CHAT_MODELS + REASONING_MODELS
# Hidden reasoning tokens a short reply costs per effort (gpt-5 alone accepts "minimal").
REASONING_TOKENS = {"minimal": 0, "low": 128, "medium": 384, "high": 1024}
FINISH_REASONS = ("length", "content_filter")

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_MESSAGES_BY_CODE = {
    "insufficient_quota": (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
    ),
    "rate_limit_exceeded": (
        "Rate limit reached for gpt-4o-mini in organization org-devstack on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s."
    ),
}
_MESSAGES_BY_STATUS = {
    401: "Incorrect API key provided.",
    429: _MESSAGES_BY_CODE["rate_limit_exceeded"],
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}
_TYPES_BY_CODE = {"insufficient_quota": "insufficient_quota", "rate_limit_exceeded": "requests"}


def _error_type(status: int, code: str | None) -> str:
    if code in _TYPES_BY_CODE:
        return _TYPES_BY_CODE[code]
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


# -- the deterministic "model" -----------------------------------------------------------------


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def extract_data(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON object between the markers in the last user message ({} if there is none)."""
    user_texts = [_message_text(m) for m in messages if m.get("role") == "user"]
    blocks = _DATA_BLOCK.findall(user_texts[-1]) if user_texts else []
    if not blocks:
        return {}
    try:
        data = json.loads(blocks[-1])
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _contains_injection(value: Any) -> bool:
    if isinstance(value, str):
        return INJECTION_PHRASE in value.casefold()
    if isinstance(value, dict):
        return any(_contains_injection(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_injection(v) for v in value)
    return False


def _site_visit_reminder(name: str, homes: str, data: Mapping[str, str]) -> str:
    when = data.get("visit_time_ist")
    visit = f"your site visit is at {when}" if when else "your site visit is coming up"
    return f"Hi {name}, a friendly reminder that {visit}. We look forward to showing you the {homes}!"


def _cost_sheet_followup(name: str, homes: str, _data: Mapping[str, str]) -> str:
    return f"Hi {name}, your cost sheet for the {homes} is ready. Reply here if you have any questions."


def _general_followup(name: str, homes: str, _data: Mapping[str, str]) -> str:
    return f"Hi {name}, thanks for your interest in our {homes}. How can we help you today?"


_REPLIES: dict[str, Callable[[str, str, Mapping[str, str]], str]] = {
    "site_visit_reminder": _site_visit_reminder,
    "cost_sheet_followup": _cost_sheet_followup,
}


def compose_reply(data: Mapping[str, Any]) -> str:
    if _contains_injection(data):
        return GULLIBLE_REPLY
    fields = {
        key: str(value).strip()
        for key, value in data.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
    name = fields.get("name") or "there"
    configuration = fields.get("configuration")
    homes = f"{configuration} homes" if configuration else "homes"
    template = _REPLIES.get(fields.get("event_type", ""), _general_followup)
    return template(name, homes, fields)


def truncate_to_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` at a word boundary to about ``max_tokens`` tokens (4 characters each)."""
    if not max_tokens or len(text) <= 4 * max_tokens:
        return text, False
    limit = 4 * max_tokens
    cut = text[:limit]
    if text[limit] != " " and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(), True


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|> ... <|end|>
REPLY_PRIMING_TOKENS = 3  # <|start|>assistant<|message|>


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """What OpenAI counts for a chat prompt: each message's content plus its framing."""
    return sum(_tokens(_message_text(m)) + TOKENS_PER_MESSAGE for m in messages) + REPLY_PRIMING_TOKENS


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be a string or null")
    return value or None


def _finish_reason_setting(value: Any) -> str | None:
    if value is not None and value not in FINISH_REASONS:
        raise ValueError(f"must be null or one of {list(FINISH_REASONS)}")
    return value


def _unsupported_parameter(param: str, hint: str = "") -> ApiError:
    message = f"Unsupported parameter: '{param}' is not supported with this model.{hint}"
    return ApiError(400, message, "unsupported_parameter", extra={"param": param})


def _unsupported_value(param: str, value: Any, hint: str) -> ApiError:
    message = f"Unsupported value: '{param}' does not support {value} with this model. {hint}"
    return ApiError(400, message, "unsupported_value", extra={"param": param})


def check_family_parameters(model: str, body: Mapping[str, Any]) -> int:
    """Raise OpenAI's 400 for a parameter ``model``'s family rejects; return its reasoning tokens."""
    effort = body.get("reasoning_effort")
    if model not in REASONING_MODELS:
        if effort is not None:
            raise _unsupported_parameter("reasoning_effort")
        return 0
    if body.get("max_tokens") is not None:
        raise _unsupported_parameter("max_tokens", " Use 'max_completion_tokens' instead.")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise _unsupported_value("temperature", temperature, "Only the default (1) value is supported.")
    allowed = list(REASONING_TOKENS) if model.startswith("gpt-5") else ["low", "medium", "high"]
    if effort is not None and effort not in allowed:
        raise _unsupported_value("reasoning_effort", effort, f"Supported values are: {', '.join(allowed)}.")
    return REASONING_TOKENS[effort or "medium"]


# -- the server -------------------------------------------------------------------------------


class OpenAIServer(StandInServer):
    service_name = "openai"
    keep_request_bodies = True
    settings_spec: ClassVar[dict[str, Setting]] = {
        **StandInServer.settings_spec,
        # When set, only this key is accepted (401 invalid_api_key otherwise); by default any key is.
        "api_key": Setting(None, _optional_str),
        "finish_reason": Setting(None, _finish_reason_setting),
    }

    def api_routes(self) -> list[Route]:
        return [
            route("POST", r"/v1/chat/completions", self._chat_completions),
            route("GET", r"/v1/models", self._list_models),
            route("GET", r"/v1/models/([^/]+)", self._get_model),
        ]

    def render_error(self, error: ApiError) -> Any:
        code = error.code if isinstance(error.code, str) else None
        return {
            "error": {
                "message": error.message,
                "type": error.extra.get("type") or _error_type(error.status, code),
                "param": error.extra.get("param"),
                "code": code,
            }
        }

    def fault_error(self, fault: Fault) -> ApiError:
        assert fault.status is not None
        code = fault.error_code if isinstance(fault.error_code, str) else None
        if code is None and fault.status == 429:
            code = "rate_limit_exceeded"  # what a bare 429 from OpenAI usually is
        message = (
            fault.message
            or _MESSAGES_BY_CODE.get(code or "")
            or _MESSAGES_BY_STATUS.get(fault.status, f"Injected fault (HTTP {fault.status})")
        )
        return ApiError(fault.status, message, code)

    def _authorize(self, request: Request) -> None:
        token = request.bearer_token()
        if token is None:
            raise ApiError(401, _MISSING_KEY)
        expected = self.settings["api_key"]
        if expected is not None and token != expected:
            raise ApiError(401, f"Incorrect API key provided: {token[:4]}****.", "invalid_api_key")

    def _chat_completions(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        body = request.json_object()
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", extra={"param": "model"})
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "'messages' must be a non-empty array of objects", extra={"param": "messages"})
        if model not in MODELS:
            raise ApiError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found",
                extra={"param": None},
            )
        if body.get("stream"):
            raise ApiError(400, "stream=true is not supported by the stand-in", extra={"param": "stream"})
        choices_wanted = body.get("n") or 1
        if not isinstance(choices_wanted, int) or not 1 <= choices_wanted <= 8:
            raise ApiError(400, "n must be an integer from 1 to 8", extra={"param": "n"})
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ApiError(400, "max_tokens must be a positive integer", extra={"param": "max_tokens"})
        reasoning = check_family_parameters(model, body)

        if limit is not None and limit <= reasoning:  # the reasoning used it all: nothing written
            text, truncated, reasoning = "", True, limit
        else:
            room = limit - reasoning if limit is not None else None
            text, truncated = truncate_to_tokens(compose_reply(extract_data(messages)), room)
        finish_reason = self.settings["finish_reason"] or ("length" if truncated else "stop")
        prompt = prompt_tokens(messages)
        completion_tokens = (_tokens(text) + reasoning) * choices_wanted
        return {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
                for index in range(choices_wanted)
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": reasoning * choices_wanted,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "system_fingerprint": "fp_devstack",
        }

    def _model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "devstack"}

    def _list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"object": "list", "data": [self._model(model_id) for model_id in MODELS]}

    def _get_model(self, request: Request, model_id: str) -> Reply:
        self._authorize(request)
        if model_id not in MODELS:
            error = ApiError(404, f"The model '{model_id}' does not exist", "model_not_found", extra={"param": "model"})
            return Reply(404, self.render_error(error))
        return Reply(200, self._model(model_id))


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(OpenAIServer, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
