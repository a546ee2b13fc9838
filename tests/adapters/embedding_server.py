"""A real OpenAI-compatible embeddings server on loopback (FastAPI + uvicorn in a thread), with fault injection.

Vectors are hashed bags of words (``dim`` buckets, signed), so texts that share words are similar and the same
text always gets the same vector. Faults are set on the instance while it runs:

- ``fail_next = n``: the next ``n`` requests answer HTTP ``fail_status`` (500 by default);
- ``fail_after = n``: every request after the first ``n`` answers ``fail_status``;
- ``wrong_dim_after = n``: requests after the first ``n`` return ``dim + 3``-long vectors;
- ``drop_one = True``: every reply holds one embedding fewer than asked for.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def hashed_vector(text: str, dim: int) -> list[float]:
    vec = np.zeros(dim, dtype=np.float64)
    for word in text.lower().split():
        h = int.from_bytes(hashlib.md5(word.encode()).digest()[:8], "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    if not vec.any():
        vec[0] = 1.0
    return (vec / np.linalg.norm(vec)).tolist()


class EmbeddingServer:
    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.requests = 0
        self.texts_seen: list[str] = []
        self.input_types: list[str | None] = []
        self.fail_next = 0
        self.fail_after: int | None = None
        self.fail_status = 500
        self.wrong_dim_after: int | None = None
        self.drop_one = False
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Any:
            body = await request.json()
            self.requests += 1
            n = self.requests
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            failing = self.fail_next > 0 or (self.fail_after is not None and n > self.fail_after)
            if self.fail_next > 0:
                self.fail_next -= 1
            if failing:
                return JSONResponse({"error": {"message": "injected fault", "type": "server_error"}},
                                    status_code=self.fail_status)
            self.texts_seen.extend(texts)
            self.input_types.append(body.get("input_type"))
            dim = self.dim + 3 if self.wrong_dim_after is not None and n > self.wrong_dim_after else self.dim
            data = [{"object": "embedding", "index": i, "embedding": hashed_vector(t, dim)}
                    for i, t in enumerate(texts)]
            if self.drop_one:
                data = data[:-1]
            return {"object": "list", "data": data, "model": body.get("model", "fake"),
                    "usage": {"prompt_tokens": 0, "total_tokens": 0}}

        return app

    def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("embedding server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        return self.base_url

    def reset(self) -> None:
        self.requests, self.fail_next, self.fail_after, self.wrong_dim_after = 0, 0, None, None
        self.drop_one, self.fail_status = False, 500
        self.texts_seen.clear()
        self.input_types.clear()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmbeddingServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
