"""Prompts (built-in en/zh, template files, few-shot) and the LLM configuration (environment, secrets)."""

from __future__ import annotations

import json

import pytest

from ragtune.config import validate_config
from ragtune.errors import ConfigError
from ragtune.generate.llm.config import LLMConfig
from ragtune.generate.llm.prompts import (
    PromptBuilder,
    choose_language,
    load_few_shot,
    load_template,
)

EN = ["Plants turn sunlight into sugar. Chlorophyll absorbs light.", "A volcano erupts when magma rises."]
ZH = ["长城是中国古代的军事防御工程。", "绿茶是不发酵的茶。"]


@pytest.mark.parametrize("texts,setting,expected", [
    (EN, "auto", "en"), (ZH, "auto", "zh"), (EN, "zh", "zh"), (ZH, "en", "en"),
])
def test_language_picks_the_template(texts, setting, expected) -> None:
    lang = choose_language(texts, setting)
    assert lang == expected
    builder = PromptBuilder(load_template(lang), per_chunk=3)
    user = builder.messages(texts[0])[-1]["content"]
    assert texts[0] in user and "3" in user
    assert ("问题" in user) == (expected == "zh")
    assert builder.messages(texts[0])[0]["role"] == "system"


def test_template_file_with_and_without_system_part(tmp_path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("You are terse.\n---\nGive {n} questions as JSON {\"questions\": [...]} about:\n{context}\n")
    b = PromptBuilder(load_template("en", f), per_chunk=4)
    msgs = b.messages("Tea is a drink.")
    assert msgs[0] == {"role": "system", "content": "You are terse."}
    assert msgs[1]["content"] == 'Give 4 questions as JSON {"questions": [...]} about:\nTea is a drink.'
    f.write_text("Questions about: {context}")
    assert [m["role"] for m in PromptBuilder(load_template("en", f)).messages("x")] == ["user"]
    assert PromptBuilder(load_template("en", f)).hash != b.hash


def test_template_errors_name_the_file_and_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_template("en", tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Write questions.")
    with pytest.raises(ConfigError, match=r"bad.txt.*\{context\}"):
        load_template("en", bad)
    with pytest.raises(ConfigError, match="language 'fr'"):
        load_template("fr")


def test_few_shot_examples_from_txt_and_jsonl(tmp_path) -> None:
    txt = tmp_path / "q.txt"
    txt.write_text("how tall is the eiffel tower\n\nbest tea temperature\nhow tall is the eiffel tower\n")
    assert sorted(load_few_shot(txt, 5)) == ["best tea temperature", "how tall is the eiffel tower"]
    jl = tmp_path / "queries.jsonl"
    jl.write_text("\n".join(json.dumps({"_id": str(i), "text": f"query {i}"}) for i in range(20)))
    picked = load_few_shot(jl, 3, seed=1)
    assert len(picked) == 3 and picked == load_few_shot(jl, 3, seed=1)
    b = PromptBuilder(load_template("en"), 2, picked)
    user = b.messages("Some passage.")[-1]["content"]
    assert all(f"- {q}" in user for q in picked) and "style" in user
    zh = PromptBuilder(load_template("zh"), 2, ["长城多长"]).messages("长城。")[-1]["content"]
    assert "- 长城多长" in zh and "风格" in zh
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="no queries"):
        load_few_shot(tmp_path / "empty.txt")


def test_is_configured_from_environment(monkeypatch) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RAGTUNE_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert not LLMConfig().is_configured()
    assert "no LLM configured" in LLMConfig().describe()
    monkeypatch.setenv("RAGTUNE_LLM_MODEL", "qwen2.5")
    assert not LLMConfig().is_configured()  # a model without an endpoint or key
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    cfg = LLMConfig()
    assert cfg.is_configured() and cfg.backend() == "openai"
    assert cfg.describe() == "qwen2.5 at http://127.0.0.1:8000/v1"
    assert LLMConfig(model="other").resolved_model() == "other"  # config beats the environment
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert LLMConfig().is_configured() and LLMConfig().resolved_api_key() == "sk-env"
    assert LLMConfig(local_model="/some/dir").backend() == "local"


def test_api_key_is_never_serialised_and_config_round_trips() -> None:
    cfg = LLMConfig(api_key="sk-secret", model="m", base_url="http://x/v1", extra_params={"top_p": 0.9})
    dumped = cfg.model_dump(mode="json")
    assert dumped["api_key"] is None and "sk-secret" not in json.dumps(dumped)
    assert "sk-secret" not in repr(cfg) and "sk-secret" not in json.dumps(cfg.identity())
    again = LLMConfig.model_validate(dumped)
    assert again.model == "m" and again.extra_params == {"top_p": 0.9}


@pytest.mark.parametrize("data,key", [
    ({"concurrency": 0}, "concurrency"),
    ({"budget_usd": -1}, "budget_usd"),
    ({"gguf_file": "x.gguf"}, "(top level)"),
    ({"modle": "typo"}, "modle"),
    ({"filters": {"roundtrip_k": 0}}, "filters.roundtrip_k"),
])
def test_invalid_config_names_the_key(data, key) -> None:
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        validate_config(LLMConfig, data, source="llm")
