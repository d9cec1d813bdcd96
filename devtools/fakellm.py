"""A real local HTTP server speaking OpenAI chat completions and Anthropic messages, for tests.

It runs in a thread of the test process on 127.0.0.1 and answers the turn workers' requests:

* ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), with the
  protocol's JSON and usage; the answer is the JSON a summary turn asks for;
* faults on demand, in order (:meth:`FakeLLM.fail_next`): ``429`` with ``Retry-After``, ``500``,
  ``401`` (whose body echoes the request's credentials back, as a careless server might),
  ``timeout`` (answers only after the client gave up), ``malformed`` (200 with broken JSON);
* per-conversation delays (:meth:`FakeLLM.delay`) to hold a turn in flight.

Every request is recorded (start, end, conversation, path, outcome, whether the key matched, the
tokens its answer reported); the conversation is the first ``conv-<n>`` found in the request body
(test messages carry it).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONV = re.compile(r"\b(conv-\d+)\b")


@dataclass
class Request:
    path: str
    conv: str | None
    start: float
    end: float = 0.0
    outcome: str = ""
    auth_ok: bool = False
    body: str = ""
    tokens: int = 0
    """Input + output tokens its answer reported (what a provider would bill)."""


@dataclass
class FakeLLM:
    key: str = ""
    latency_s: float = 0.0
    timeout_sleep_s: float = 3.0
    requests: list[Request] = field(default_factory=list)
    faults: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    overlaps: list[str] = field(default_factory=list)
    _inflight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    # --- control -------------------------------------------------------------------------------
    def fail_next(self, *faults: str, retry_after: str = "1", conv: str | None = None) -> None:
        """Answer the next requests (of ``conv``, or any) with these faults, in order."""
        with self._lock:
            self.faults += [(f, {"retry_after": retry_after, "conv": conv}) for f in faults]

    def delay(self, conv: str, *seconds: float) -> None:
        """Hold the next requests of ``conv`` this long each before answering."""
        with self._lock:
            self.delays[conv] += list(seconds)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self, conv: str | None = None, outcome: str | None = "ok") -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (conv is None or r.conv == conv) and (outcome is None or r.outcome == outcome)
            ]

    # --- serving -------------------------------------------------------------------------------
    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _take_fault(self, conv: str | None) -> tuple[str, dict[str, Any]] | None:
        for i, (_kind, opts) in enumerate(self.faults):
            if opts["conv"] in (None, conv):
                return self.faults.pop(i)
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        text = raw.decode("utf-8", "replace")
        m = CONV.search(text)
        conv = m.group(1) if m else None
        auth = h.headers.get("authorization") or ""
        api_key = h.headers.get("x-api-key") or ""
        req = Request(h.path, conv, time.time(), body=text)
        req.auth_ok = bool(self.key) and (auth == f"Bearer {self.key}" or api_key == self.key)
        with self._lock:
            self.requests.append(req)
            fault = self._take_fault(conv)
            delay = self.delays[conv].pop(0) if conv and self.delays.get(conv) else self.latency_s
            if conv:
                self._inflight[conv] += 1
                if self._inflight[conv] > 1:
                    self.overlaps.append(conv)
        try:
            self._answer(h, req, text, fault, delay)
        except (BrokenPipeError, ConnectionResetError):
            req.outcome = req.outcome or "client-gone"
        finally:
            req.end = time.time()
            with self._lock:
                if conv:
                    self._inflight[conv] -= 1

    def _answer(
        self, h: BaseHTTPRequestHandler, req: Request, text: str, fault: tuple[str, dict[str, Any]] | None, delay: float
    ) -> None:
        anthropic = h.path.endswith("/messages")
        if fault is not None:
            kind, opts = fault
            req.outcome = kind
            if kind == "429":
                return _send(
                    h,
                    429,
                    {"error": {"type": "rate_limit_error", "message": "slow down"}},
                    {"retry-after": opts["retry_after"]},
                )
            if kind == "500":
                return _send(h, 500, {"error": {"type": "api_error", "message": "internal error"}})
            if kind == "401":
                auth = h.headers.get("authorization") or h.headers.get("x-api-key") or ""
                return _send(h, 401, {"error": {"type": "authentication_error", "message": f"bad key: {auth}"}})
            if kind == "timeout":
                time.sleep(self.timeout_sleep_s)
                return _send(h, 200, _ok(anthropic, req.conv, text))
            if kind == "malformed":
                return _send_raw(h, 200, b'{"id": "x", "choices": [{"message": {"content": "unfinished')
            raise AssertionError(kind)
        if delay:
            time.sleep(delay)
        req.outcome = "ok"
        answer = _ok(anthropic, req.conv, text)
        req.tokens = sum(v for k, v in answer["usage"].items() if k != "total_tokens")
        _send(h, 200, answer)


def _ok(anthropic: bool, conv: str | None, text: str) -> dict[str, Any]:
    markers = re.findall(r"(conv-\d+ b\d+ l\d+)", text)
    answer = json.dumps({"title": f"Title of {conv}", "summary": f"up to {markers[-1] if markers else '?'}"})
    if anthropic:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake",
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(text) // 4, "output_tokens": len(answer) // 4},
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(answer) // 4, "total_tokens": 0},
    }


def _send(h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
    _send_raw(h, status, json.dumps(obj).encode(), headers)


def _send_raw(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()
