"""Shared plumbing of the HTTP stand-ins (Sheets/Drive, OpenAI, WhatsApp).

Each stand-in is a :class:`StandInServer` subclass that lists its API routes and knows how to
render an error in its service's wire format. This module supplies everything the three share:

* routing of ``(method, regex)`` to server methods, JSON in and out, HTTP/1.1 keep-alive;
* a call log (method, path, status, request/response sizes) for tests and benchmarks;
* a fault-injection queue and a settings store, driven through a control API under
  ``/_control/`` that is never itself logged, delayed or faulted:

  ``GET  /_control/health``    ``{"ok": true, "service": name, "pid": its process id}``
  ``GET  /_control/faults``    pending faults
  ``POST /_control/faults``    ``{"faults": [{"count", "status", "body", "error_code", "message",
  "delay", "path_contains", "answer"}]}`` appended to the queue. ``answer`` is the
  *accept-then-lose-the-answer* fault: the request is applied as usual, then ``"drop"`` closes the
  connection without a byte of response and ``"hang"`` holds it silently for ``delay`` seconds
  (default 60) first, so the client's read timeout fires. A fault with only an ``error_code``
  answers with the HTTP status the service uses for that code (:meth:`StandInServer.status_for_code`)
  ``GET|POST /_control/settings``  read / merge settings (``latency`` plus service-specific ones)
  ``GET  /_control/calls``     the call log
  ``POST /_control/reset``     forget faults, settings, calls and the service's stored state

* :func:`run_main`, the ``python -m devstack.<module>`` entry point that prints
  ``READY http://host:port`` once listening, and :func:`serve_in_thread` for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

CONTROL_PREFIX = "/_control/"
HANG_SECONDS = 60.0  # longer than any client read timeout the project configures


class ApiError(Exception):
    """An error answered in the service's own wire format (see ``StandInServer.render_error``).

    ``code`` is the service's error code (Meta's numeric code, OpenAI's string code, Google's
    status name); ``extra`` is merged into the error object for service-specific fields.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: int | str | None = None,
        details: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.extra = dict(extra or {})


@dataclass
class Request:
    method: str
    path: str  # still percent-encoded: Sheets ranges may contain '/', ':' and '!'
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from None

    def json_object(self) -> dict[str, Any]:
        payload = self.json()
        if not isinstance(payload, dict):
            raise ApiError(400, "Invalid JSON payload received. Expected a JSON object.")
        return payload

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def params(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, or None if absent/malformed."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # Set by an ``answer`` fault: the request was applied, the client never hears about it.
    lose_answer: bool = False
    hang_seconds: float = 0.0


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Any]  # (request, *regex groups) -> Reply | JSON-able body (200)


def route(method: str, pattern: str, handler: Callable[..., Any]) -> Route:
    return Route(method, re.compile(pattern), handler)


@dataclass
class Fault:
    remaining: int
    status: int | None
    delay: float
    body: Any = None
    error_code: int | str | None = None
    message: str | None = None
    path_contains: str | None = None
    answer: str | None = None  # "drop" | "hang": apply the request, then lose the answer

    KEYS: ClassVar[frozenset[str]] = frozenset(
        {"count", "status", "body", "error_code", "message", "delay", "path_contains", "answer"}
    )

    @classmethod
    def from_json(cls, raw: Any) -> Fault:
        if not isinstance(raw, dict):
            raise ApiError(400, "each fault must be a JSON object")
        unknown = set(raw) - cls.KEYS
        if unknown:
            raise ApiError(400, f"unknown fault keys: {sorted(unknown)}")
        count, status, answer = raw.get("count", 1), raw.get("status"), raw.get("answer")
        delay = raw.get("delay", HANG_SECONDS if answer == "hang" else 0.0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ApiError(400, "fault 'count' must be an integer >= 1")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ApiError(400, "fault 'status' must be an HTTP status code")
        if not isinstance(delay, int | float) or delay < 0:
            raise ApiError(400, "fault 'delay' must be a number of seconds >= 0")
        if answer not in (None, "drop", "hang"):
            raise ApiError(400, "fault 'answer' must be 'drop' or 'hang'")
        if answer is not None and status is not None:
            raise ApiError(400, "an 'answer' fault applies the request, so it takes no 'status'")
        if status is None and not delay and answer is None and raw.get("error_code") is None:
            raise ApiError(400, "a fault needs a 'status', an 'error_code', a 'delay' or an 'answer'")
        for key, types in (("error_code", int | str), ("message", str), ("path_contains", str)):
            if raw.get(key) is not None and not isinstance(raw[key], types):
                raise ApiError(400, f"fault '{key}' has the wrong type")
        return cls(
            remaining=count,
            status=status,
            delay=float(delay),
            body=raw.get("body"),
            error_code=raw.get("error_code"),
            message=raw.get("message"),
            path_contains=raw.get("path_contains"),
            answer=answer,
        )

    def matches(self, decoded_path: str) -> bool:
        return self.path_contains is None or self.path_contains in decoded_path


@dataclass
class CallRecord:
    method: str
    path: str
    status: int
    request_bytes: int
    response_bytes: int
    at: float = field(default_factory=time.time)  # when it was answered (epoch seconds): spacing of calls


@dataclass(frozen=True)
class Setting:
    default: Any
    coerce: Callable[[Any], Any]  # validates a value sent to /_control/settings (raise ValueError)


def non_negative_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("must be a number >= 0")
    return float(value)


class StandInServer(ThreadingHTTPServer):
    """Base of the stand-ins; subclasses set ``service_name`` and implement the hooks below."""

    service_name: ClassVar[str] = "stand-in"
    settings_spec: ClassVar[dict[str, Setting]] = {"latency": Setting(0.0, non_negative_float)}
    # The OpenAI stand-in keeps request bodies so a test can check the prompt it was sent.
    keep_request_bodies: ClassVar[bool] = False
    daemon_threads = True  # a client that hangs up mid-delay must not block shutdown
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        *,
        quiet: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self._control_lock = threading.Lock()
        self._faults: list[Fault] = []
        self.settings: dict[str, Any] = self._default_settings()
        self._calls: list[CallRecord] = []
        self._request_bodies: list[Any] = []
        self._api_routes = self.api_routes()
        self._control_routes = [
            route("GET", r"/_control/health", self._health),
            route("GET", r"/_control/faults", self._list_faults),
            route("POST", r"/_control/faults", self._add_faults),
            route("GET", r"/_control/settings", self._get_settings),
            route("POST", r"/_control/settings", self._update_settings),
            route("GET", r"/_control/calls", self._list_calls),
            route("POST", r"/_control/reset", self._reset),
            *([route("GET", r"/_control/requests", self._list_bodies)] if self.keep_request_bodies else []),
            *self.extra_control_routes(),
        ]
        super().__init__((host, port), _RequestHandler)
        self.load_state()

    # -- hooks for subclasses -------------------------------------------------------------------

    def load_state(self) -> None:
        """Set up the service's own state and read what ``data_dir`` persisted (called once the
        server is set up, before it answers a request)."""

    def api_routes(self) -> list[Route]:
        raise NotImplementedError

    def extra_control_routes(self) -> list[Route]:
        return []

    def render_error(self, error: ApiError) -> Any:
        """The response body for ``error`` in the service's wire format."""
        raise NotImplementedError

    def fault_error(self, fault: Fault) -> ApiError:
        """The error an injected fault without an explicit ``body`` turns into."""
        status = fault.status or self.status_for_code(fault.error_code)
        return ApiError(status, fault.message or f"Injected fault (HTTP {status})", fault.error_code)

    def status_for_code(self, code: int | str | None) -> int:
        """The HTTP status the service answers an error ``code`` with (faults without a status)."""
        return 400

    def reset_state(self) -> None:
        """Forget the service's stored data (called by ``POST /_control/reset``)."""

    # -- public helpers -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        host = str(self.server_address[0])
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop a server started with :func:`serve_in_thread` and release its port."""
        self.shutdown()
        self.server_close()

    def calls(self) -> list[CallRecord]:
        with self._control_lock:
            return list(self._calls)

    # -- request handling (called by _RequestHandler) -------------------------------------------

    def handle_control(self, request: Request) -> Reply:
        try:
            return _dispatch(self._control_routes, request)
        except ApiError as error:
            return Reply(error.status, {"ok": False, "error": error.message})

    def handle_api(self, request: Request) -> Reply:
        if self.keep_request_bodies and request.body:
            with self._control_lock:
                self._request_bodies.append(_best_effort_json(request.body))
        latency = self.settings["latency"]
        if latency:
            time.sleep(latency)
        fault = self._take_fault(unquote(request.path))
        if fault is not None and fault.answer is None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None or fault.error_code is not None:
                error = self.fault_error(fault)
                body = fault.body if fault.body is not None else self.render_error(error)
                return Reply(error.status, body)
        reply = self._dispatch_api(request)
        if fault is not None and fault.answer is not None:  # applied; now lose the answer
            reply.lose_answer = True
            reply.hang_seconds = fault.delay if fault.answer == "hang" else 0.0
        return reply

    def _dispatch_api(self, request: Request) -> Reply:
        try:
            return _dispatch(self._api_routes, request)
        except ApiError as error:
            return Reply(error.status, self.render_error(error))
        except Exception:  # noqa: BLE001 - a stand-in bug must surface as a 500, not a dropped connection
            traceback.print_exc()
            return Reply(500, self.render_error(ApiError(500, "Internal error in the stand-in (see its log)")))

    def record_call(self, record: CallRecord) -> None:
        with self._control_lock:
            self._calls.append(record)

    def _take_fault(self, decoded_path: str) -> Fault | None:
        with self._control_lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(decoded_path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._faults[index]
                    return fault
        return None

    def _default_settings(self) -> dict[str, Any]:
        # Copy mutable defaults (lists, sets) so a reset really restores them.
        return {name: _copy(spec.default) for name, spec in self.settings_spec.items()}

    # -- control API ----------------------------------------------------------------------------

    def _health(self, _request: Request) -> dict[str, Any]:
        # The pid lets a starter tell its own server from another one already on the port.
        return {"ok": True, "service": self.service_name, "pid": os.getpid()}

    def _list_faults(self, _request: Request) -> dict[str, Any]:
        with self._control_lock:
            return {"faults": [asdict(fault) for fault in self._faults]}

    def _add_faults(self, request: Request) -> dict[str, Any]:
        raw = request.json_object().get("faults")
        if not isinstance(raw, list):
            raise ApiError(400, 'body must be {"faults": [...]}')
        faults = [Fault.from_json(item) for item in raw]
        with self._control_lock:
            self._faults.extend(faults)
            return {"ok": True, "queued": len(self._faults)}

    def _get_settings(self, _request: Request) -> dict[str, Any]:
        return _jsonable(self.settings)

    def _update_settings(self, request: Request) -> dict[str, Any]:
        updates = request.json_object()
        unknown = set(updates) - set(self.settings_spec)
        if unknown:
            raise ApiError(400, f"unknown settings {sorted(unknown)}; known: {sorted(self.settings_spec)}")
        coerced: dict[str, Any] = {}
        for name, value in updates.items():
            try:
                coerced[name] = self.settings_spec[name].coerce(value)
            except (TypeError, ValueError) as exc:
                raise ApiError(400, f"setting {name!r}: {exc}") from None
        with self._control_lock:
            # Replace rather than mutate, so request threads always see a consistent dict.
            self.settings = {**self.settings, **coerced}
        return {"ok": True, "settings": _jsonable(self.settings)}

    def _list_calls(self, _request: Request) -> list[dict[str, Any]]:
        return [asdict(call) for call in self.calls()]

    def _list_bodies(self, _request: Request) -> list[Any]:
        with self._control_lock:
            return list(self._request_bodies)

    def _reset(self, _request: Request) -> dict[str, Any]:
        with self._control_lock:
            self._faults.clear()
            self._calls.clear()
            self._request_bodies.clear()
            self.settings = self._default_settings()
        self.reset_state()
        return {"ok": True}


def _dispatch(routes: Sequence[Route], request: Request) -> Reply:
    for candidate in routes:
        match = candidate.pattern.fullmatch(request.path)
        if match and candidate.method == request.method:
            result = candidate.handler(request, *match.groups())
            return result if isinstance(result, Reply) else Reply(200, result)
    raise ApiError(404, f"No such method: {request.method} {request.path}")


def _best_effort_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body.decode("utf-8", "replace")


def _copy(value: Any) -> Any:
    if isinstance(value, list | set | dict):
        return type(value)(value)
    return value


def _jsonable(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, set | frozenset) else v for k, v in settings.items()}


class _RequestHandler(BaseHTTPRequestHandler):
    server: StandInServer
    # HTTP/1.1 keeps connections alive, as the real APIs do (httplib2/httpx reuse them), which
    # matters for benchmark numbers. It obliges us to always send Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "devstack"
    sys_version = ""
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per response), which would dominate every benchmark.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        method, query = self.command, parse_qs(split.query, keep_blank_values=True)
        if method == "POST" and (self.headers.get("X-HTTP-Method-Override") or "").upper() == "GET":
            # googleapiclient sends a GET whose URL passes 2,048 characters (a values.batchGet of
            # many ranges) as a POST with the query in a form body; Google's front end takes it.
            method = "GET"
            for name, values in parse_qs(body.decode("ascii", "replace"), keep_blank_values=True).items():
                query.setdefault(name, []).extend(values)
        request = Request(method=method, path=split.path, query=query, headers=self.headers, body=body)
        if request.path.startswith(CONTROL_PREFIX):
            self._send(self.server.handle_control(request))
            return
        reply = self.server.handle_api(request)
        payload = b"" if reply.lose_answer else self._payload(reply)
        # Recorded before the answer leaves: a client that has its answer must find its call in
        # the log (recording after the write let a fast reader miss the last call).
        self.server.record_call(
            CallRecord(request.method, unquote(request.path), reply.status, len(body), len(payload))
        )
        if reply.lose_answer:
            self._lose(reply)
        else:
            self._send(reply, payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the blank line after the last chunk (no trailers expected)
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _payload(reply: Reply) -> bytes:
        return json.dumps(reply.body, ensure_ascii=False).encode("utf-8")

    def _send(self, reply: Reply, payload: bytes | None = None) -> int:
        payload = self._payload(reply) if payload is None else payload
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired during an injected delay): nothing to do.
            self.close_connection = True
        return len(payload)

    def _lose(self, reply: Reply) -> int:
        """Never answer: hold the connection (the client's read timeout fires), then close it."""
        if reply.hang_seconds:
            time.sleep(reply.hang_seconds)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        return 0

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def serve_in_thread(server: StandInServer) -> threading.Thread:
    """Run ``server`` on a daemon thread; stop it with ``server.stop()``."""
    # A short poll interval keeps shutdown() fast, which matters for restart tests.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"{server.service_name}-server",
        daemon=True,
    )
    thread.start()
    return thread


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_main(
    server_cls: type[StandInServer],
    argv: Sequence[str] | None = None,
    commands: Mapping[str, Callable[[list[str]], int]] | None = None,
    description: str | None = None,
) -> int:
    """``python -m devstack.<module> [--host H] [--port N] [--data-dir DIR] [--verbose]``, or one of
    the module's offline ``commands`` (``dump``, ``outbox``) when the first argument names one."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = dict(commands or {})
    if args and args[0] in commands:
        return commands[args[0]](args[1:])
    parser = argparse.ArgumentParser(
        prog=f"python -m {server_cls.__module__}",
        description=description,
        epilog=f"other commands: {', '.join(commands)} (run '<command> --help')" if commands else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    parser.add_argument("--data-dir", type=Path, help="where state is persisted (default: memory only)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = parser.parse_args(args)
    server = server_cls(options.host, options.port, options.data_dir, quiet=not options.verbose)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(f"READY {server.base_url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
