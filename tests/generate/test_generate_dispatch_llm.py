"""``generate_queries(method="auto")`` switches to the LLM as soon as the environment configures one."""

from __future__ import annotations

from fake_llm_server import FakeLLMServer

from ragtune.config import GenerateConfig
from ragtune.generate import generate_queries, load_generated, write_generated
from ragtune.generate.filters import FilterConfig
from ragtune.generate.llm import LLMConfig

CORPUS = {f"c{i}": {"title": "", "text": f"The glacier number {i} moves kappa{i} metres a year across basalt "
                                         f"ridge {i}. Its meltwater feeds aquifer {i}."} for i in range(6)}


def test_auto_uses_llm_from_environment(monkeypatch, tmp_path):
    with FakeLLMServer(timeout_sleep=3.0) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("RAGTUNE_LLM_MODEL", "fake")
        llm = LLMConfig(filters=FilterConfig(enabled=False))
        gs = generate_queries(CORPUS, GenerateConfig(method="auto", per_chunk=2), llm=llm, cache_dir=tmp_path)
        sent = srv.stats()["requests"]
        again = generate_queries(CORPUS, GenerateConfig(method="auto", per_chunk=2), llm=llm, cache_dir=tmp_path)
        assert srv.stats()["requests"] == sent  # the rerun is served from the cache
    assert gs.method != "ict" and "no LLM" not in (gs.note or "")
    assert len(gs.queries) >= len(CORPUS) and set(gs.queries) == set(again.queries)
    assert gs.info["stats"] and gs.info["model"] == "fake"
    write_generated(gs, tmp_path / "out")
    back = load_generated(tmp_path / "out")
    assert back.queries == gs.queries and back.info["stats"] == gs.info["stats"]
