"""A small typed client for the WhatsApp Business Cloud API (``POST /{version}/{phone_id}/messages``).

Connection ``whatsapp_default`` (type http): ``host`` is the base URL (``https://graph.facebook.com``
in production), ``password`` the access token, extra ``phone_number_id``, ``api_version`` and
``timeout`` (seconds).

Errors are classified by HTTP status and Meta error code (:func:`is_transient`): throttling
(``130429``, ``131056`` pair rate limit, ``131048``, ``80007``, ``4``), Meta-side trouble (``1``,
``2``, ``131000``, ``131016``, ``133004``), any 429 or 5xx, timeouts and connection errors are
transient and retried here with exponential backoff and jitter (tenacity). Everything else is
permanent for that message: ``131026`` undeliverable, ``131047`` window closed, ``131008`` missing
parameter, and any other 4xx. Authentication errors (HTTP 401, code ``190``) are *fatal*: no
message can succeed, so the caller stops the batch instead of failing each message.

Nothing here logs the recipient, the token or Meta's error text (which can quote the number).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from leadflow.config import WHATSAPP_CONN_ID
from leadflow.phones import mask

log = logging.getLogger(__name__)

DEFAULT_API_VERSION = "v25.0"
DEFAULT_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5.0
MAX_TEXT_CHARS = 4096
MAX_CAPTION_CHARS = 1024

# Meta error codes (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes)
RATE_LIMIT = 130429
PAIR_RATE_LIMIT = 131056
UNDELIVERABLE = 131026
WINDOW_CLOSED = 131047
PARAMETER_MISSING = 131008
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, RATE_LIMIT, 131000, 131016, 131048, PAIR_RATE_LIMIT, 133004})
FATAL_CODES = frozenset({190})

SendMode = Literal["text", "media", "template"]


class WhatsAppError(Exception):
    """A failed send. ``code`` is Meta's error code, or ``timeout`` / ``connection_error``."""

    def __init__(self, *, status: int | None, code: int | str | None, transient: bool, fatal: bool = False):
        self.status = status
        self.code = code
        self.transient = transient
        self.fatal = fatal
        super().__init__(f"WhatsApp send failed: code {self.code_str} (HTTP {status})")

    @property
    def code_str(self) -> str:
        if self.code not in (None, ""):
            return str(self.code)
        return f"http_{self.status}"


def is_transient(status: int | None, code: int | str | None) -> bool:
    """Whether a retry can help: throttling, Meta-side errors, 429 and 5xx."""
    if isinstance(code, int) and code in TRANSIENT_CODES:
        return True
    if status is None:
        return True  # no HTTP answer at all: timeout or connection error
    return status == 429 or status >= 500


def is_fatal(status: int | None, code: int | str | None) -> bool:
    """Credentials rejected: every message would fail the same way."""
    return status == 401 or (isinstance(code, int) and code in FATAL_CODES)


@dataclass(frozen=True)
class WhatsAppConfig:
    base_url: str
    token: str
    phone_number_id: str
    api_version: str = DEFAULT_API_VERSION
    timeout: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_connection(cls, conn_id: str = WHATSAPP_CONN_ID) -> WhatsAppConfig:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra_dejson
        host = (conn.host or "").rstrip("/")
        if not host.startswith(("http://", "https://")):
            host = f"https://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
        if not conn.password or not extra.get("phone_number_id"):
            raise ValueError(f"connection {conn_id!r} needs a password (token) and extra phone_number_id")
        return cls(
            base_url=host,
            token=conn.password,
            phone_number_id=str(extra["phone_number_id"]),
            api_version=str(extra.get("api_version") or DEFAULT_API_VERSION),
            timeout=float(extra.get("timeout") or DEFAULT_TIMEOUT_S),
        )

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{self.api_version}/{self.phone_number_id}/messages"

    def __repr__(self) -> str:  # never print the token
        return f"WhatsAppConfig(base_url={self.base_url!r}, phone_number_id={self.phone_number_id!r})"


@dataclass(frozen=True)
class Template:
    name: str
    language: str
    media_header: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 8.0
    # After 131056 (pair rate limit) Meta accepts the next message to that user only after ~6 s.
    pair_wait: float = 6.0

    def wait(self) -> Callable[[Any], float]:
        backoff = wait_exponential_jitter(initial=self.initial_wait, max=self.max_wait)

        def seconds(state: Any) -> float:
            delay = backoff(state)
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, WhatsAppError) and error.code == PAIR_RATE_LIMIT:
                delay = max(delay, self.pair_wait)
            return delay

        return seconds


def text_payload(to: str, text: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": text[:MAX_TEXT_CHARS]},
    }


def media_payload(to: str, media_type: str, url: str, caption: str) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": media_type,
        media_type: {"link": url, "caption": caption[:MAX_CAPTION_CHARS]},
    }


def template_payload(
    to: str,
    template: Template,
    body_text: str,
    media: tuple[str, str] | None = None,
    *,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """The approved template with ``body_text`` as its one body parameter ({{1}}).

    ``callback_data`` (the event id) comes back in every delivery receipt of the message as
    ``biz_opaque_callback_data``, so a receipt finds its event even when the send's answer was lost.
    """
    components: list[dict[str, Any]] = []
    if template.media_header and media is not None:
        media_type, url = media
        components.append({"type": "header", "parameters": [{"type": media_type, media_type: {"link": url}}]})
    components.append({"type": "body", "parameters": [{"type": "text", "text": body_text}]})
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {"name": template.name, "language": {"code": template.language}, "components": components},
    }
    if callback_data is not None:
        payload["biz_opaque_callback_data"] = callback_data
    return payload


class WhatsAppClient:
    """Thread-safe sender; one pooled HTTP session shared by the worker threads."""

    def __init__(
        self,
        config: WhatsAppConfig,
        *,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        on_retry: Callable[[WhatsAppError], None] | None = None,
    ) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Authorization"] = f"Bearer {config.token}"

    def close(self) -> None:
        self._session.close()

    def send(self, payload: dict[str, Any]) -> str:
        """POST the message, retrying transient errors; return the ``wamid``."""

        def before_sleep(state: Any) -> None:
            error = state.outcome.exception()
            log.warning(
                "WhatsApp transient error %s to %s; retry %d/%d",
                getattr(error, "code_str", type(error).__name__),
                mask(payload.get("to")),
                state.attempt_number,
                self.retry.attempts - 1,
            )
            if self.on_retry is not None and isinstance(error, WhatsAppError):
                self.on_retry(error)

        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self.retry.wait(),
            retry=retry_if_exception(lambda exc: isinstance(exc, WhatsAppError) and exc.transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._post_once, payload)

    def _post_once(self, payload: dict[str, Any]) -> str:
        try:
            response = self._session.post(
                self.config.messages_url,
                json=payload,
                timeout=(CONNECT_TIMEOUT_S, self.config.timeout),
            )
        except requests.Timeout:
            raise WhatsAppError(status=None, code="timeout", transient=True) from None
        except requests.ConnectionError:
            raise WhatsAppError(status=None, code="connection_error", transient=True) from None
        if response.ok:
            try:
                return str(response.json()["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                # Accepted by Meta, but no wamid: still a send. Never retry it.
                return "unknown"
        code = _error_code(response)
        raise WhatsAppError(
            status=response.status_code,
            code=code,
            transient=is_transient(response.status_code, code),
            fatal=is_fatal(response.status_code, code),
        )


def _error_code(response: requests.Response) -> int | str | None:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code if isinstance(code, int | str) else None
