"""An OpenAI-compatible chat-completions server on loopback that scripts tool calls.

It runs on its own thread (so services in other processes, and sync or async
tests, can all use it) and answers ``POST /v1/chat/completions`` from the
conversation alone: the script is named in the goal as ``[script:NAME]``
and the turn is the number of assistant messages so far. The same goal
therefore always gets the same replies, whatever else runs beside it.

Scripts (``turn`` counts from 0; ``tool_choice: "none"`` always gets a
text answer, ``Summary after N turns: <last observation>``):

- ``answer``: answers ``Nothing to run.`` at once.
- ``one-call``: calls ``python`` with ``print(6 * 7)``, then answers
  ``The answer is <stdout>``.
- ``two-calls``: calls ``python`` twice in one turn (``print(1)``,
  ``print(2)``), then answers with both outputs.
- ``forbidden``: calls ``shell`` (a tool no policy offers), then answers with
  the error it got back.
- ``malformed``: calls ``python`` with arguments that are not JSON, then
  answers with the error it got back.
- ``endless``: calls ``python`` with a different program every turn.
- ``stuck``: calls ``python`` with ``print('same')`` every turn.
- ``failing``: calls ``python`` once, then answers every request with 500.
- ``slow``: calls ``python``, each reply after ``SLOW_SECONDS``.
- ``sleepy``: calls ``python`` with a program that sleeps 30 s.
- ``greedy``: reports 4000 tokens per call and keeps calling ``python``.
- ``loud``: calls ``python`` with a program printing 50000 characters, every turn.
- ``denied``: calls ``python`` with a program that writes outside its directory.
- ``demo``: calls ``demo`` with no arguments, then answers with its output.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_SECONDS = 1.5
_SCRIPT = re.compile(r"\[script:([a-z-]+)\]")


def goal_for(script: str, text: str = "Work the goal.") -> str:
    """A goal that makes the server follow ``script``."""
    return f"{text} [script:{script}]"


def observation(message: dict[str, Any]) -> dict[str, Any]:
    """A tool message's content as the agent sent it (JSON), or the raw text."""
    try:
        value = json.loads(message.get("content") or "")
    except ValueError:
        return {"raw": message.get("content")}
    return value if isinstance(value, dict) else {"raw": value}


def _call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _python(call_id: str, code: str) -> dict[str, Any]:
    return _call(call_id, "python", {"code": code})


@dataclass
class Reply:
    """What the server answers one request with."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    tokens: tuple[int, int] = (100, 20)


def _last_observations(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tail: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        tail.append(observation(message))
    return list(reversed(tail))


def _stdout(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(o.get("stdout", "")).strip() for o in _last_observations(messages))


def _errors(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(o.get("error", "")) for o in _last_observations(messages))


def script_reply(script: str, turn: int, messages: list[dict[str, Any]]) -> Reply:
    """The scripted reply for ``turn`` of ``script``."""
    if script == "answer":
        return Reply(content="Nothing to run.")
    if script == "one-call":
        if turn == 0:
            return Reply(tool_calls=[_python("c1", "print(6 * 7)")])
        return Reply(content=f"The answer is {_stdout(messages)}")
    if script == "two-calls":
        if turn == 0:
            return Reply(tool_calls=[_python("a", "print(1)"), _python("b", "print(2)")])
        return Reply(content=f"Outputs: {_stdout(messages)}")
    if script == "forbidden":
        if turn == 0:
            return Reply(tool_calls=[_call("x", "shell", {"cmd": "id"})])
        return Reply(content=f"Refused: {_errors(messages)}")
    if script == "malformed":
        if turn == 0:
            return Reply(tool_calls=[_call("m", "python", '{"code": "print(1)"')])
        return Reply(content=f"Bad call: {_errors(messages)}")
    if script == "endless":
        return Reply(tool_calls=[_python(f"e{turn}", f"print({turn})")])
    if script == "stuck":
        return Reply(tool_calls=[_python(f"s{turn}", "print('same')")])
    if script == "failing":
        if turn == 0:
            return Reply(tool_calls=[_python("f", "print('first')")])
        return Reply(status=500)
    if script == "slow":
        return Reply(tool_calls=[_python(f"w{turn}", f"print({turn})")], delay=SLOW_SECONDS)
    if script == "sleepy":
        return Reply(tool_calls=[_python("z", "import time\ntime.sleep(30)\nprint('woke')")])
    if script == "greedy":
        return Reply(tool_calls=[_python(f"g{turn}", f"print({turn})")], tokens=(3000, 1000))
    if script == "loud":
        return Reply(tool_calls=[_python(f"l{turn}", f"print('{turn}' * 50000)")])
    if script == "denied":
        if turn == 0:
            return Reply(tool_calls=[_python("d", "open('/etc/pagi-test', 'w')")])
        return Reply(content="Done.")
    if script == "demo":
        if turn == 0:
            return Reply(tool_calls=[_call("demo1", "demo", "")])
        return Reply(content=f"Demo said: {_stdout(messages)}")
    return Reply(content=f"unknown script {script!r}")


@dataclass
class Recorded:
    """One request the server got."""

    script: str
    turn: int
    goal: str
    body: dict[str, Any]


class ScriptedModel:
    """The server: ``start()``, point ``MODEL_BASE_URL`` at :attr:`base_url`, ``stop()``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload, delay = model.answer(body)
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The URL to give as ``MODEL_BASE_URL``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> ScriptedModel:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of(self, script: str) -> list[Recorded]:
        """The requests of one script, in order."""
        with self._lock:
            return [r for r in self.requests if r.script == script]

    def of_goal(self, goal: str) -> list[Recorded]:
        """The requests made while working ``goal``, in order."""
        with self._lock:
            return [r for r in self.requests if r.goal == goal]

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """Status, JSON body and delay for one request."""
        messages = body.get("messages") or []
        goal = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
        match = _SCRIPT.search(goal)
        script = match.group(1) if match else "answer"
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        with self._lock:
            self.requests.append(Recorded(script, turn, goal, body))
        if body.get("tool_choice") == "none" or not body.get("tools"):
            last = _last_observations(messages)
            summary = f"Summary after {turn} turns: {json.dumps(last[-1]) if last else 'nothing'}"
            reply = Reply(content=summary)
        else:
            reply = script_reply(script, turn, messages)
        if reply.status != 200:
            return reply.status, {"error": {"message": "scripted failure"}}, reply.delay
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        prompt, completion = reply.tokens
        payload = {
            "id": f"chatcmpl-{script}-{turn}",
            "object": "chat.completion",
            "model": body.get("model", "scripted"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        return 200, payload, reply.delay
