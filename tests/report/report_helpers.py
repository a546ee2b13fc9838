"""Documents for a small real run (English manuals, Chinese text, hostile markup) and the run itself."""

from __future__ import annotations

import logging
import random
from pathlib import Path

logger = logging.getLogger(__name__)

HOSTILE = "<script>window.__pwned=1</script>"
ZH_MARKER = "龙井"

_DEVICES = ["Zephyr pump", "Orion valve", "Lumen lamp", "Basalt drill", "Cinder kiln", "Harbor crane",
            "Meadow mower", "Quartz clock"]
_PARTS = ["gasket", "rotor", "filter", "sensor", "bearing", "switch", "spring", "nozzle", "panel", "fuse"]
_VERBS = ["inspect", "replace", "clean", "tighten", "calibrate", "lubricate", "check", "reset"]
_PLACES = ["the workshop", "the north depot", "a dry cellar", "the field station", "the loading bay"]
_TEMPLATES = [
    "The {dev} uses a {part} rated for {n} hours of service before it must be replaced.",
    "Operators should {verb} the {part} of the {dev} every {m} days, or sooner in dusty conditions.",
    "If the {dev} stops suddenly, {verb} the {part} first and then restart it from the main panel.",
    "The {dev} was first installed in {place} in {year} and has run for about {n} hours since then.",
    "A worn {part} makes the {dev} vibrate, and the vibration grows louder at speeds above {m} turns.",
    "Store spare {part}s for the {dev} in {place}, away from heat, water and direct sunlight.",
    "The manual for the {dev} lists {m} safety rules; the most important one forbids opening it while powered.",
    "During winter the {dev} needs a warm-up period of {m} minutes before the {part} reaches working temperature.",
    "Technicians in {place} report that the {dev} consumes {n} watts when the {part} is new.",
    "To order a new {part} for the {dev}, quote the serial number stamped near the {part2}.",
]
ZH_TEXT = (
    "龙井茶产自浙江杭州的西湖一带，是中国最有名的绿茶之一。每年清明节前采摘的嫩芽被称为明前茶，价格最高。"
    "炒制龙井需要经过杀青、理条和辉锅等多道工序，全部由茶师用手在铁锅中完成。"
    "冲泡龙井时水温不宜过高，一般用八十度左右的热水，这样茶汤清澈，香气也更持久。"
    "好的龙井茶外形扁平光滑，颜色嫩绿，入口有淡淡的豆香。茶叶应当密封保存在阴凉干燥的地方，避免受潮和串味。"
    "西湖周边的茶园大多分布在山坡上，云雾多，土壤透气，这是龙井品质优良的重要原因。"
    "许多游客到杭州旅行时会去梅家坞或者龙井村参观茶园，并在茶农家里品尝新茶。"
)


def _english_doc(dev: str, rng: random.Random) -> str:
    sentences = []
    for i in range(16):
        tpl = _TEMPLATES[i % len(_TEMPLATES)]
        part, part2 = rng.sample(_PARTS, 2)
        sentences.append(tpl.format(dev=dev, part=part, part2=part2, verb=rng.choice(_VERBS),
                                    place=rng.choice(_PLACES), n=rng.randint(100, 9000), m=rng.randint(2, 60),
                                    year=rng.randint(1990, 2023)))
    # every English document opens with hostile markup, so it reaches every split and every table of the report
    sentences.insert(0, f"Field note for the {dev}: {HOSTILE} & \"quotes\" 'stay' {{{{ 7*7 }}}} as typed.")
    return " ".join(sentences[:8]) + "\n\n" + " ".join(sentences[8:]) + "\n"


def make_docs(folder: Path) -> Path:
    """Eight English manuals (each opening with hostile markup) and two Chinese documents, as txt files."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    for dev in _DEVICES:
        name = dev.lower().replace(" ", "-")
        (folder / f"{name}.txt").write_text(_english_doc(dev, rng), encoding="utf-8")
    (folder / "longjing.txt").write_text(ZH_TEXT + "\n", encoding="utf-8")
    (folder / "longjing-notes.txt").write_text(ZH_TEXT[60:] + ZH_TEXT[:60] + "\n", encoding="utf-8")
    return folder


def build_run(docs: Path, run_dir: Path, base_model: str) -> Path:
    from ragtune.config import RunConfig
    from ragtune.pipeline import run_pipeline

    cfg = RunConfig.load(None, {"ingest.chunk_tokens": 64, "embedding.base": base_model, "embedding.max_steps": 2,
                                "embedding.batch_size": 8, "embedding.learning_rate": 5e-3, "eval.bootstrap": 50,
                                "reranker.base": base_model, "reranker.max_steps": 2, "reranker.batch_size": 8,
                                "reranker.negatives": 2})
    run_pipeline(docs, run_dir, cfg)
    return run_dir
