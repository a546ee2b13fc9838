"""A real OpenAI-compatible chat server on loopback, for tests and the throughput benchmark.

It answers ``POST /v1/chat/completions`` after ``latency`` seconds with ``n`` questions built from words of the
passage, and injects faults (429, 500, timeout, garbage) at a seeded rate. Whether a request fails is decided by
(seed, prompt, how many times this prompt was seen), so a run is reproducible whatever the arrival order.
It counts requests per prompt: ``GET /stats`` returns the totals.

In-process: ``with FakeLLMServer(latency=0.2) as srv: srv.base_url``. As a process:
``python fake_llm_server.py --latency 0.5 --fault-rate 0.3`` prints ``READY <base_url>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

FAULTS = ("429", "500", "timeout", "garbage")  # also "401" on request
_PASSAGE = re.compile(r"<passage>\s*(.*?)\s*</passage>", re.S)
_CJK = re.compile(r"[\u4e00-\u9fff]")


def default_reply(messages: list[dict[str, str]], n: int = 2) -> str:
    """``n`` numbered questions about words of the passage (Chinese passages get Chinese questions)."""
    user = messages[-1]["content"]
    m = _PASSAGE.search(user)
    passage = m.group(1) if m else user
    if _CJK.search(passage):
        chars = [c for c in passage if _CJK.match(c)]
        picks = ["".join(chars[i * 2:i * 2 + 2]) for i in range(n)]
        return "\n".join(f"{i + 1}. 关于{p}有哪些说法？" for i, p in enumerate(picks))
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", passage)]
    words = list(dict.fromkeys(words)) or ["things"]
    templates = ["What is known about {a} and {b}?", "How does {a} relate to {b}?",
                 "Why does {a} matter for {b}?", "Which role does {a} play in {b}?"]
    out = []
    for i in range(n):
        a, b = words[(2 * i) % len(words)], words[(2 * i + 1) % len(words)]
        out.append(f"{i + 1}. " + templates[i % len(templates)].format(a=a, b=b))
    return "\n".join(out)


class FakeLLMServer:
    def __init__(self, latency: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 seed: int = 0, n: int = 2, timeout_sleep: float = 30.0,
                 reply: Callable[[list[dict[str, str]]], str] | None = None):
        self.latency, self.fault_rate, self.faults, self.seed = latency, fault_rate, faults, seed
        self.n, self.timeout_sleep = n, timeout_sleep
        self.reply = reply or (lambda msgs: default_reply(msgs, self.n))
        self.requests: Counter[str] = Counter()      # per prompt (last user message)
        self.completed: Counter[str] = Counter()     # per prompt, 200 with a good reply sent
        self.fault_counts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # --- the app -------------------------------------------------------------------------------------------
    def _fault(self, prompt: str, attempt: int) -> str | None:
        if not self.fault_rate:
            return None
        rng = random.Random(f"{self.seed}|{prompt}|{attempt}")
        return rng.choice(self.faults) if rng.random() < self.fault_rate else None

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            messages = body["messages"]
            prompt = messages[-1]["content"]
            attempt = self.requests[prompt]
            self.requests[prompt] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                fault = self._fault(prompt, attempt)
                if fault:
                    self.fault_counts[fault] += 1
                if fault == "timeout":
                    await asyncio.sleep(self.timeout_sleep)
                await asyncio.sleep(self.latency)
                if fault == "429":
                    return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, 429,
                                        headers={"retry-after": "0"})
                if fault in ("500", "401"):
                    return JSONResponse({"error": {"message": f"fault {fault}", "type": "injected"}}, int(fault))
                text = "I am sorry, I cannot help with that." if fault == "garbage" else self.reply(messages)
                if fault != "garbage":
                    self.completed[prompt] += 1
                return _completion(body.get("model", "fake"), messages, text)
            finally:
                self.in_flight -= 1

        @app.get("/stats")
        async def stats() -> dict[str, Any]:
            return self.stats()

        @app.get("/prompts")
        async def prompts() -> dict[str, int]:
            return dict(self.requests)

        @app.post("/reset")
        async def reset() -> PlainTextResponse:
            self.reset()
            return PlainTextResponse("ok")

        return app

    def stats(self) -> dict[str, Any]:
        return {"requests": sum(self.requests.values()), "distinct_prompts": len(self.requests),
                "completed": sum(self.completed.values()),
                "completed_twice": sum(1 for c in self.completed.values() if c > 1),
                "faults": dict(self.fault_counts), "max_in_flight": self.max_in_flight}

    def reset(self) -> None:
        self.requests.clear()
        self.completed.clear()
        self.fault_counts.clear()
        self.max_in_flight = 0

    # --- running ---------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False,
                                timeout_keep_alive=30, backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _completion(model: str, messages: list[dict[str, str]], text: str) -> dict[str, Any]:
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    completion_tokens = len(text.split())
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-sleep", type=float, default=30.0)
    args = ap.parse_args()
    srv = FakeLLMServer(latency=args.latency, fault_rate=args.fault_rate, seed=args.seed,
                        timeout_sleep=args.timeout_sleep)
    print("READY", srv.start(args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
