"""The hand-drawn SVG charts: scales, bins and what is left out when there is nothing to draw."""

from __future__ import annotations

import pytest

from ragtune.report import plots
from ragtune.report.html import lang_attr, render_html


@pytest.mark.parametrize(("low", "high"), [(0, 5), (1.9, 2.01), (0, 1), (-0.3, 0.7), (0.35, 0.5), (3, 3), (0, 1234)])
def test_nice_ticks_cover_the_range(low, high):
    ticks = plots.nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and ticks == sorted(ticks) and 2 <= len(ticks) <= 12


def test_tick_labels_use_as_few_decimals_as_needed():
    assert [plots.tick_format([0, 0.25, 0.5])(v) for v in (0, 0.5)] == ["0.00", "0.50"]
    assert plots.tick_format([0, 2, 4])(2) == "2"


def test_histogram_keeps_ties_apart_from_small_changes():
    chart = plots.delta_histogram([-1.0, -0.05, 0.0, 0.0, 0.0, 0.04, 0.5, 1.0], "ndcg@10", "ft", "base")
    bars = [e for e in chart["elements"] if e["t"] == "rect"]
    assert len(bars) == 21
    counts = [int(b["tip"].rsplit(": ", 1)[1]) for b in bars]
    assert counts[10] == 3 and counts[9] == 1 and counts[11] == 1  # ties, just below 0, just above 0
    assert counts[0] == 1 and counts[-1] == 1 and counts[16] == 1  # -1, +1 and +0.5 (in [0.5, 0.6))
    assert [item["label"] for item in chart["legend"]] == ["worse (2)", "tie (3)", "better (3)"]
    assert plots.delta_histogram([], "ndcg@10", "ft", "base") is None


def test_charts_stay_inside_their_box():
    ev = {"systems": {"a": {"means": {"ndcg@10": 1.0, "hit@1": 0.0}, "ci95": {"ndcg@10": [0.9, 1.0]}},
                      "b": {"means": {"ndcg@10": 0.5}}}}
    charts = [plots.metric_bars(ev), plots.recall_chart({"k": [1, 2, 3], "systems": {"a": [0.1, 0.5, 1.0]}}),
              plots.line_chart("loss", {"train": [(1, 2.5), (2, 0.1), (3, 7.0)]}, "loss")]
    for chart in charts:
        for e in chart["elements"]:
            xs = [e[k] for k in ("x", "x1", "x2") if k in e]
            ys = [e[k] for k in ("y", "y1", "y2") if k in e]
            assert all(0 <= v <= chart["width"] for v in xs) and all(0 <= v <= chart["height"] for v in ys), e
            assert e.get("h", 0) >= 0 and e.get("w", 0) >= 0
    assert plots.recall_chart({"k": [1], "systems": {"a": [1.0]}}) is None
    assert plots.training_charts({"losses": [], "evals": []}) == []


def test_training_charts_draw_a_validation_loss_when_logged():
    charts = plots.training_charts({"losses": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.8}],
                                    "evals": [{"step": 2, "eval_val_loss": 0.9, "eval_val_cosine_ndcg@10": 0.4}]})
    assert [c["title"] for c in charts] == ["Training and validation loss", "Validation nDCG@10 during training"]
    assert [item["label"] for item in charts[0]["legend"]] == ["training loss", "validation loss"]


def test_training_charts_draw_monitored_sets_beside_validation():
    evals = [{"step": s, "eval_val_cosine_ndcg@10": v, "eval_monitor_general_cosine_ndcg@10": g}
             for s, v, g in ((5, 0.70, 0.87), (10, 0.74, 0.86))]
    charts = plots.training_charts({"losses": [{"step": 5, "loss": 1.0}], "evals": evals})
    assert [c["title"] for c in charts] == ["Training loss", "nDCG@10 during training"]
    assert [item["label"] for item in charts[1]["legend"]] == ["validation nDCG@10", "general nDCG@10"]


def test_lang_attribute_marks_chinese_only():
    assert str(lang_attr("长城东起山海关")) == ' lang="zh-Hans"'
    assert str(lang_attr("The Great Wall")) == "" and str(lang_attr(None)) == ""


def test_an_evaluation_of_one_system_renders():
    data = {"title": "单一系统 run", "created": "now", "run_dir": "/x", "timings": {"steps": {}, "total_s": 0},
            "manifest": {}, "evaluation": {"num_queries": 3, "num_docs": 5, "metrics": ["ndcg@10"],
                                           "baseline": "bm25", "systems": {"bm25": {"means": {"ndcg@10": 0.5}}}},
            "verdict": {"metric": "ndcg@10", "winner": "bm25", "scores": {"bm25": 0.5}}}
    html = render_html(data)
    assert 'id="results"' in html and "Best system on ndcg@10: bm25" in html and "单一系统" in html
    assert 'id="examples"' not in html
