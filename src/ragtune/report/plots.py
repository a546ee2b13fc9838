"""The report's charts as plain chart specs (boxes, lines, texts in pixel coordinates) that the HTML template draws
as inline SVG.

Drawn by hand rather than with matplotlib on purpose: the four chart types are simple; inline SVG text takes the
page's CSS font stack (so Chinese system names or labels render wherever the page does); every label goes through
jinja2's autoescaping like the rest of the page; and the report stays fast and needs no plotting dependency.

A chart is ``{"title", "width", "height", "elements": [...], "legend": [{"label", "cls"}], "note"}``; an element is
one of ``{"t": "rect", x, y, w, h, cls, tip}``, ``{"t": "line", x1, y1, x2, y2, cls}``,
``{"t": "poly", points, cls}`` or ``{"t": "text", x, y, text, anchor, cls}``. ``cls`` names CSS classes only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

BAR_METRICS = ("ndcg@10", "mrr@10", "hit@1", "hit@5", "hit@10")
PALETTE_SIZE = 8
WIDTH, HEIGHT = 560, 300
MARGIN = {"left": 52, "right": 16, "top": 28, "bottom": 44}


class _Frame:
    """Maps data coordinates into the plot area of a ``width`` x ``height`` chart."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float], *, log_x: bool = False,
                 width: int = WIDTH, height: int = HEIGHT):
        self.width, self.height, self.log_x = width, height, log_x
        self.left, self.right = MARGIN["left"], width - MARGIN["right"]
        self.top, self.bottom = MARGIN["top"], height - MARGIN["bottom"]
        self.x0, self.x1 = (math.log10(v) for v in x_range) if log_x else x_range
        self.y0, self.y1 = y_range
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1

    def x(self, v: float) -> float:
        v = math.log10(v) if self.log_x else v
        return round(self.left + (v - self.x0) / (self.x1 - self.x0) * (self.right - self.left), 1)

    def y(self, v: float) -> float:
        return round(self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top), 1)

    def axes(self, y_ticks: Sequence[float], y_label: str, x_label: str,
             fmt: Callable[[float], str] = lambda v: f"{v:g}") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for v in y_ticks:
            out.append({"t": "line", "x1": self.left, "y1": self.y(v), "x2": self.right, "y2": self.y(v),
                        "cls": "grid"})
            out.append({"t": "text", "x": self.left - 6, "y": self.y(v) + 4, "text": fmt(v), "anchor": "end",
                        "cls": "tick"})
        out.append({"t": "line", "x1": self.left, "y1": self.bottom, "x2": self.right, "y2": self.bottom,
                    "cls": "axis"})
        out.append({"t": "line", "x1": self.left, "y1": self.top, "x2": self.left, "y2": self.bottom, "cls": "axis"})
        out.append({"t": "text", "x": (self.left + self.right) / 2, "y": self.height - 6, "text": x_label,
                    "anchor": "middle", "cls": "label"})
        out.append({"t": "text", "x": 8, "y": 14, "text": y_label, "anchor": "start", "cls": "label"})
        return out

    def x_ticks(self, ticks: Sequence[float], fmt: Callable[[float], str] = lambda v: f"{v:g}") -> list[dict]:
        return [{"t": "text", "x": self.x(v), "y": self.bottom + 16, "text": fmt(v), "anchor": "middle",
                 "cls": "tick"} for v in ticks]


def _chart(title: str, frame: _Frame, elements: list[dict], legend: list[dict] | None = None,
           note: str = "") -> dict[str, Any]:
    return {"title": title, "width": frame.width, "height": frame.height, "elements": elements,
            "legend": legend or [], "note": note}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [round(math.floor(low / step) * step, 10)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def tick_format(ticks: Sequence[float]) -> Callable[[float], str]:
    """Fixed decimals, as few as tell every tick apart exactly (0.25 steps print as 0.25, 0.50, ...)."""
    digits = next((d for d in range(7) if all(abs(round(t, d) - t) < 1e-9 for t in ticks)), 6)
    return lambda v: f"{v:.{digits}f}"


def system_classes(names: Sequence[str]) -> dict[str, str]:
    """A colour class per system, stable in the order the systems were evaluated."""
    return {n: f"s{i % PALETTE_SIZE}" for i, n in enumerate(names)}


def metric_bars(evaluation: dict[str, Any], metrics: Sequence[str] = BAR_METRICS) -> dict[str, Any] | None:
    """Grouped bars, one group per metric and one bar per system, with 95% CI whiskers."""
    systems = evaluation.get("systems", {})
    metrics = [m for m in metrics if any(m in s.get("means", {}) for s in systems.values())]
    if not systems or not metrics:
        return None
    frame = _Frame((0, len(metrics)), (0, 1))
    classes = system_classes(list(systems))
    elements = frame.axes([0, 0.25, 0.5, 0.75, 1.0], "score", "metric (bars: mean; whiskers: 95% CI)")
    group = (frame.right - frame.left) / len(metrics)
    bar = group * 0.8 / len(systems)
    for gi, metric in enumerate(metrics):
        elements.append({"t": "text", "x": round(frame.left + group * (gi + 0.5), 1), "y": frame.bottom + 16,
                         "text": metric, "anchor": "middle", "cls": "tick"})
        for si, (name, s) in enumerate(systems.items()):
            mean = s.get("means", {}).get(metric)
            if mean is None:
                continue
            x = round(frame.left + group * gi + group * 0.1 + bar * si, 1)
            elements.append({"t": "rect", "x": x, "y": frame.y(mean), "w": round(bar * 0.9, 1),
                             "h": round(frame.bottom - frame.y(mean), 1), "cls": f"bar {classes[name]}",
                             "tip": f"{name} {metric} {mean:.4f}"})
            ci = s.get("ci95", {}).get(metric)
            if ci:
                cx = round(x + bar * 0.45, 1)
                lo, hi = frame.y(ci[0]), frame.y(ci[1])
                elements += [{"t": "line", "x1": cx, "y1": lo, "x2": cx, "y2": hi, "cls": "whisker"},
                             {"t": "line", "x1": cx - 3, "y1": lo, "x2": cx + 3, "y2": lo, "cls": "whisker"},
                             {"t": "line", "x1": cx - 3, "y1": hi, "x2": cx + 3, "y2": hi, "cls": "whisker"}]
    legend = [{"label": n, "cls": c} for n, c in classes.items()]
    return _chart("Retrieval quality per system", frame, elements, legend)


def recall_chart(curves: dict[str, Any], order: Sequence[str] = ()) -> dict[str, Any] | None:
    """Mean recall@k against k (log scale), one line per system."""
    ks: list[int] = curves.get("k", [])
    systems: dict[str, list[float]] = curves.get("systems", {})
    if len(ks) < 2 or not systems:
        return None
    frame = _Frame((ks[0], ks[-1]), (0, 1), log_x=True)
    classes = system_classes(list(order) or list(systems))
    elements = frame.axes([0, 0.25, 0.5, 0.75, 1.0], "recall@k", "k (log scale)")
    elements += frame.x_ticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if ks[0] <= t <= ks[-1]])
    for name, values in systems.items():
        cls = classes.get(name, "s0")
        points = " ".join(f"{frame.x(k)},{frame.y(v)}" for k, v in zip(ks, values, strict=False))
        elements.append({"t": "poly", "points": points, "cls": f"curve {cls}"})
    legend = [{"label": n, "cls": classes.get(n, "s0")} for n in systems]
    return _chart("Recall@k on the test queries", frame, elements, legend)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], y_label: str,
               x_label: str = "training step") -> dict[str, Any] | None:
    """One line (with point markers) per named series of ``(x, y)`` pairs."""
    series = {n: pts for n, pts in series.items() if pts}
    if not series:
        return None
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    pad = (max(ys) - min(ys)) * 0.1 or abs(max(ys)) * 0.1 or 1.0
    y_ticks = nice_ticks(min(ys) - pad, max(ys) + pad)
    frame = _Frame((min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1),
                   (y_ticks[0], y_ticks[-1]))
    elements = frame.axes(y_ticks, y_label, x_label, fmt=tick_format(y_ticks))
    x_ticks = [t for t in nice_ticks(frame.x0, frame.x1, 6) if frame.x0 <= t <= frame.x1]
    if all(float(x).is_integer() for x in xs):  # training steps: no ticks between whole steps
        x_ticks = [t for t in x_ticks if float(t).is_integer()] or [min(xs), max(xs)]
    elements += frame.x_ticks(x_ticks, fmt=tick_format(x_ticks))
    classes = {n: f"s{(i + 1) % PALETTE_SIZE}" for i, n in enumerate(series)}
    for name, pts in series.items():
        cls = classes[name]
        elements.append({"t": "poly", "points": " ".join(f"{frame.x(x)},{frame.y(y)}" for x, y in pts),
                         "cls": f"curve {cls}"})
        if len(pts) <= 60:
            elements += [{"t": "rect", "x": frame.x(x) - 2, "y": frame.y(y) - 2, "w": 4, "h": 4,
                          "cls": f"bar {cls}", "tip": f"{name}: {y:.4g} at {x:g}"} for x, y in pts]
    legend = [{"label": n, "cls": c} for n, c in classes.items()]
    return _chart(title, frame, elements, legend)


def delta_histogram(deltas: Sequence[float], metric: str, candidate: str, baseline: str,
                    bins: int = 10) -> dict[str, Any] | None:
    """Per-query score changes: ``bins`` bins of width 1/bins each side of zero, exact ties as their own bar."""
    if not deltas:
        return None
    counts = [0] * (2 * bins + 1)  # losses, the tie bar, wins
    for d in deltas:
        if d == 0:
            counts[bins] += 1
        elif d < 0:
            counts[max(0, bins - 1 - int(min(-d, 0.999999) * bins))] += 1
        else:
            counts[bins + 1 + min(bins - 1, int(min(d, 0.999999) * bins))] += 1
    top = max(counts)
    y_ticks = nice_ticks(0, top, 4)
    frame = _Frame((0, len(counts)), (0, y_ticks[-1]))
    elements = frame.axes(y_ticks, "queries", f"change in {metric} per query ({candidate} − {baseline})",
                          fmt=lambda v: f"{v:g}")
    width = (frame.right - frame.left) / len(counts)
    for i, n in enumerate(counts):
        kind = "loss" if i < bins else "tie" if i == bins else "win"
        low = (i - bins) / bins if i < bins else (i - bins - 1) / bins
        label = "exactly 0" if kind == "tie" else f"{low:+.1f} to {low + 1 / bins:+.1f}"
        x = round(frame.left + i * width + 1, 1)
        elements.append({"t": "rect", "x": x, "y": frame.y(n), "w": round(width - 2, 1),
                         "h": round(frame.bottom - frame.y(n), 1), "cls": f"bar {kind}", "tip": f"{label}: {n}"})
        if n:
            elements.append({"t": "text", "x": round(x + width / 2 - 1, 1), "y": frame.y(n) - 3, "text": str(n),
                             "anchor": "middle", "cls": "tick"})
    elements += frame.x_ticks([0, 2 * bins + 1], fmt=lambda v: "−1" if v == 0 else "+1")
    elements.append({"t": "text", "x": round(frame.left + (bins + 0.5) * width, 1), "y": frame.bottom + 16,
                     "text": "0", "anchor": "middle", "cls": "tick"})
    wins = sum(counts[bins + 1:])
    losses = sum(counts[:bins])
    legend = [{"label": f"worse ({losses})", "cls": "loss"}, {"label": f"tie ({counts[bins]})", "cls": "tie"},
              {"label": f"better ({wins})", "cls": "win"}]
    return _chart(f"Per-query change in {metric}", frame, elements, legend)


def training_charts(training: dict[str, Any]) -> list[dict[str, Any]]:
    """Training loss per logging step, the validation loss when logged, and nDCG@10 per evaluation of the
    validation set and of each monitored set (e.g. the guard's general check set)."""
    charts = []
    losses = [(float(h["step"]), float(h["loss"])) for h in training.get("losses", [])
              if isinstance(h.get("loss"), (int, float)) and "step" in h]
    evals = training.get("evals", [])
    val_loss = [(float(e["step"]), float(e["eval_val_loss"])) for e in evals
                if isinstance(e.get("eval_val_loss"), (int, float)) and "step" in e]
    chart = line_chart("Training and validation loss" if val_loss else "Training loss",
                       {"training loss": losses, "validation loss": val_loss}, "loss")
    if chart:
        charts.append(chart)
    keys = list(dict.fromkeys(k for e in evals for k in e
                              if k.startswith(("eval_val_", "eval_monitor_")) and k.endswith("ndcg@10")))
    val_key = next((k for k in keys if k.startswith("eval_val_")), None)
    series = {}
    for key in ([val_key] if val_key else []) + [k for k in keys if k.startswith("eval_monitor_")]:
        label = "validation" if key == val_key else key.removeprefix("eval_monitor_").split("_cosine")[0]
        series[f"{label} nDCG@10"] = [(float(e["step"]), float(e[key])) for e in evals
                                      if isinstance(e.get(key), (int, float))]
    if series:
        title = "Validation nDCG@10 during training" if len(series) == 1 else "nDCG@10 during training"
        chart = line_chart(title, series, "nDCG@10")
        if chart:
            charts.append(chart)
    return charts
