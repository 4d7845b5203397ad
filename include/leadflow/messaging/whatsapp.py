"""A small typed client for the WhatsApp Business Cloud API (``POST /{version}/{phone_id}/messages``).

Connection ``whatsapp_default`` (type http): ``host`` is the base URL (``https://graph.facebook.com``
in production), ``password`` the access token, extra ``phone_number_id``, ``api_version`` and
``timeout`` (seconds).

Errors are classified by what the answer proves (:func:`classify`):

* **retried at once** (here, tenacity, exponential backoff with jitter): only what is certain not
  to have been sent or explicitly asks for a retry: connect errors (no connection, nothing
  written) and HTTP 429 / codes ``130429`` (throughput) and ``131056`` (pair rate limit);
* **ambiguous** (:attr:`WhatsAppError.ambiguous`): the request may have reached WhatsApp, a
  read timeout, a connection lost after the request was written, a 5xx without a Meta error
  body. Never retried blind: the caller records ``unknown_outcome`` and lets a delivery receipt
  (matched by ``biz_opaque_callback_data``) or the grace period decide;
* **rejected, try later** (:attr:`WhatsAppError.transient`): a Meta error body with a code that
  says "not now" (``1``, ``2``, ``4``, ``80007``, ``131000``, ``131016``, ``131048``, ``133004``)
  or a 5xx with an error body: the message is left for a later SQS delivery;
* **account-level** (:attr:`WhatsAppError.account_level`): no message can succeed until a human
  acts: ``190`` (token) / HTTP 401, ``131042`` (payment), ``132001`` (template missing or not
  approved), ``132015`` / ``132016`` (template paused / disabled for low quality: every send of
  it fails until it is edited and approved again, so one failure per message would only burn the
  batch), ``10`` and ``200``-``299`` (permission), ``368`` (temporarily blocked), ``131031``
  (account locked). The caller stops the batch;
* everything else is **permanent** for that message (``131026`` undeliverable, ``131008``
  missing parameter, any other 4xx), with three the caller treats specially: ``131047`` (the
  24-hour window closed: the template instead), ``131049`` / ``131050`` (Meta's marketing limit
  for the buyer / the buyer stopped marketing messages, see :mod:`leadflow.marketing`).

**Rate.** :meth:`WhatsAppClient.send` calls ``before_attempt`` (the global send-rate limiter)
before *every* POST, retries included: a retry after ``130429`` (throughput reached) that skipped
the limiter would add to the very burst Meta just refused.

Every payload carries ``biz_opaque_callback_data`` = the event id, which Meta echoes in each
status webhook, so a receipt finds its ledger entry even when the send's own answer was lost.

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
PAYMENT_REQUIRED = 131042
TEMPLATE_MISSING = 132001
TEMPLATE_PAUSED = 132015
TEMPLATE_DISABLED = 132016
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, RATE_LIMIT, 131000, 131016, 131048, PAIR_RATE_LIMIT, 133004})
RETRY_NOW_CODES = frozenset({RATE_LIMIT, PAIR_RATE_LIMIT})
ACCOUNT_LEVEL_CODES = frozenset(
    {190, 10, 368, PAYMENT_REQUIRED, TEMPLATE_MISSING, TEMPLATE_PAUSED, TEMPLATE_DISABLED, 131031, *range(200, 300)}
)
FATAL_CODES = ACCOUNT_LEVEL_CODES  # the old name
MAX_CALLBACK_DATA = 512  # Meta's limit on biz_opaque_callback_data

SendMode = Literal["text", "media", "template"]


class WhatsAppError(Exception):
    """A failed send. ``code`` is Meta's error code, or ``timeout`` / ``connection_error`` / ``connect_error``.

    ``retry_now``: safe to retry at once; ``ambiguous``: may have been sent; ``transient``: proven
    not sent, may succeed later; ``account_level`` (alias ``fatal``): no message can succeed.
    """

    def __init__(
        self,
        *,
        status: int | None,
        code: int | str | None,
        transient: bool,
        fatal: bool = False,
        ambiguous: bool = False,
        retry_now: bool = False,
    ):
        self.status = status
        self.code = code
        self.transient = transient
        self.fatal = fatal
        self.ambiguous = ambiguous
        self.retry_now = retry_now
        super().__init__(f"WhatsApp send failed: code {self.code_str} (HTTP {status})")

    @property
    def account_level(self) -> bool:
        return self.fatal

    @property
    def code_str(self) -> str:
        if self.code not in (None, ""):
            return str(self.code)
        return f"http_{self.status}"


def is_transient(status: int | None, code: int | str | None) -> bool:
    """Whether a later attempt can help: throttling, Meta-side errors, 429 and 5xx."""
    if isinstance(code, int) and code in TRANSIENT_CODES:
        return True
    if status is None:
        return True  # no HTTP answer at all: timeout or connection error
    return status == 429 or status >= 500


def is_fatal(status: int | None, code: int | str | None) -> bool:
    """Account-level: credentials, payment, templates, permissions; every message would fail."""
    return status == 401 or (isinstance(code, int) and code in ACCOUNT_LEVEL_CODES)


def is_retry_now(status: int | None, code: int | str | None) -> bool:
    """An explicit "slow down" answer: the message was not accepted, retrying at once is safe."""
    return status == 429 or (isinstance(code, int) and code in RETRY_NOW_CODES)


def classify(status: int, code: int | str | None) -> WhatsAppError:
    """The error for an HTTP error answer; a 5xx without a Meta error code proves nothing."""
    if status >= 500 and code is None:
        return WhatsAppError(status=status, code=None, transient=False, ambiguous=True)
    return WhatsAppError(
        status=status,
        code=code,
        transient=is_transient(status, code),
        fatal=is_fatal(status, code),
        retry_now=is_retry_now(status, code),
    )


def _connect_failed(exc: requests.ConnectionError) -> bool:
    """Whether the connection itself failed, i.e. not a byte of the request was written."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


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
    category: str = "MARKETING"  # Meta's category it is approved in: UTILITY, MARKETING, AUTHENTICATION


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


def _envelope(to: str, kind: str, callback_data: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
    if callback_data:
        payload["biz_opaque_callback_data"] = callback_data[:MAX_CALLBACK_DATA]
    payload["type"] = kind
    return payload


def text_payload(to: str, text: str, *, callback_data: str | None = None) -> dict[str, Any]:
    return {
        **_envelope(to, "text", callback_data),
        "text": {"preview_url": False, "body": text[:MAX_TEXT_CHARS]},
    }


def media_payload(
    to: str, media_type: str, url: str, caption: str, *, callback_data: str | None = None
) -> dict[str, Any]:
    return {
        **_envelope(to, media_type, callback_data),
        media_type: {"link": url, "caption": caption[:MAX_CAPTION_CHARS]},
    }


class TemplateMediaMissing(ValueError):
    """A template approved with a media header, for a message without media: Meta would answer
    132012 ("header: Format mismatch"), so it is never sent."""


def template_payload(
    to: str,
    template: Template,
    body_text: str,
    media: tuple[str, str] | None = None,
    *,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """The approved template with ``body_text`` as its one body parameter ({{1}}) and, when it
    has a media header, ``media`` (type, link) as the header; raises TemplateMediaMissing
    when it has one and ``media`` is None."""
    if template.media_header and media is None:
        raise TemplateMediaMissing(f"template {template.name} has a media header and the message has no media")
    components: list[dict[str, Any]] = []
    if template.media_header and media is not None:
        media_type, url = media
        components.append({"type": "header", "parameters": [{"type": media_type, media_type: {"link": url}}]})
    components.append({"type": "body", "parameters": [{"type": "text", "text": body_text}]})
    return {
        **_envelope(to, "template", callback_data),
        "template": {"name": template.name, "language": {"code": template.language}, "components": components},
    }


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

    def send(self, payload: dict[str, Any], *, before_attempt: Callable[[], Any] | None = None) -> str:
        """POST the message, retrying transient errors; return the ``wamid``.

        ``before_attempt`` runs before every attempt, retries included (the send-rate limiter)."""

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
            retry=retry_if_exception(lambda exc: isinstance(exc, WhatsAppError) and exc.retry_now),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(self._post_once, payload, before_attempt)

    def _post_once(self, payload: dict[str, Any], before_attempt: Callable[[], Any] | None = None) -> str:
        if before_attempt is not None:
            before_attempt()
        try:
            response = self._session.post(
                self.config.messages_url,
                json=payload,
                timeout=(CONNECT_TIMEOUT_S, self.config.timeout),
            )
        except requests.ConnectTimeout:  # before requests.Timeout: nothing was sent
            raise WhatsAppError(status=None, code="connect_error", transient=True, retry_now=True) from None
        except requests.Timeout:  # the read timed out: the request may have been applied
            raise WhatsAppError(status=None, code="timeout", transient=False, ambiguous=True) from None
        except requests.ConnectionError as exc:
            if _connect_failed(exc):
                raise WhatsAppError(status=None, code="connect_error", transient=True, retry_now=True) from None
            raise WhatsAppError(status=None, code="connection_error", transient=False, ambiguous=True) from None
        if response.ok:
            try:
                return str(response.json()["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                # Accepted by Meta, but no wamid: still a send. Never retry it.
                return "unknown"
        raise classify(response.status_code, _error_code(response))


def _error_code(response: requests.Response) -> int | str | None:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code if isinstance(code, int | str) else None
