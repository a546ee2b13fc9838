"""The local transformers backend: a tiny random Llama (built here, ~50K parameters) with a BPE tokenizer and a
chat template; batched generation, micro-batching of concurrent calls, the pipeline, and GGUF path resolution."""

from __future__ import annotations

import asyncio
import json

import pytest

from ragtune.errors import ConfigError
from ragtune.generate.filters import FilterConfig
from ragtune.generate.llm import LLMConfig, generate_llm_questions
from ragtune.generate.llm.clients import LocalTransformersClient, make_client, resolve_local_model

TEXTS = ["Plants turn sunlight into sugar. What is chlorophyll? How do leaves absorb light?",
         "A volcano erupts when magma rises. 1. Why does lava flow? 2. What is ash?",
         "You write realistic search questions for testing a document retrieval system."] * 5
CORPUS = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(TEXTS[:3])}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


def test_batched_generation_returns_text(tiny_llama) -> None:
    client = LocalTransformersClient(tiny_llama, temperature=0.0, max_tokens=12, batch_size=4)
    assert client._loaded is None  # weights load on first use: a fully cached rerun never loads them
    batch = [[{"role": "user", "content": t}] for t in ("short", TEXTS[0], TEXTS[1] + TEXTS[2])]
    out = client.generate_batch(batch)
    assert len(out) == 3
    assert all(c.text and 0 < c.completion_tokens <= 12 and c.prompt_tokens > 0 for c in out)
    assert out[0].prompt_tokens < out[2].prompt_tokens  # left padding is not counted
    again = client.generate_batch(batch[:1])  # greedy: batching does not change the answer
    assert again[0].text == out[0].text


def test_concurrent_calls_are_gathered_into_batches(tiny_llama) -> None:
    client = LocalTransformersClient(tiny_llama, temperature=0.0, max_tokens=4, batch_size=2)
    sizes: list[int] = []
    original = client.generate_batch

    def spy(batch):
        sizes.append(len(batch))
        return original(batch)

    client.generate_batch = spy  # type: ignore[method-assign]

    async def go():
        return await asyncio.gather(*(client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(5)))

    results = asyncio.run(go())
    assert len(results) == 5 and sizes == [2, 2, 1]


def test_pipeline_runs_on_the_local_model(tiny_llama, tmp_path) -> None:
    config = LLMConfig(local_model=tiny_llama, max_tokens=16, local_batch_size=4, max_retries=1,
                       filters=FilterConfig(roundtrip="none"))
    assert config.backend() == "local" and isinstance(make_client(config), LocalTransformersClient)
    res = generate_llm_questions(CORPUS, config, tmp_path, progress=False)
    # A random model writes gibberish: every chunk is answered or listed as failed, and nothing crashes.
    assert res.stats.succeeded + res.stats.failed == 3 and res.stats.completion_tokens > 0
    assert set(res.failed) | {d for v in res.qrels.values() for d in v} <= set(CORPUS)
    assert res.report.steps[0].dropped == sum(1 for w in res.failed.values() if w.startswith("parse"))
    assert res.model.startswith("/") and res.stats.sent == 3 + res.stats.retries


def test_render_without_chat_template(tiny_llama) -> None:
    client = LocalTransformersClient(tiny_llama, max_tokens=4)
    client.tokenizer.chat_template = None
    text, templated = client.render([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Ask."}])
    assert not templated and text == "System: Be brief.\n\nUser: Ask.\n\nAssistant:"


def test_gguf_path_resolution(tmp_path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert resolve_local_model(hf) == (hf, None)
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.Q4.gguf").write_bytes(b"GGUF")
    assert resolve_local_model(one) == (one, "m.Q4.gguf")
    assert resolve_local_model(one / "m.Q4.gguf") == (one, "m.Q4.gguf")
    assert resolve_local_model(one, "m.Q4.gguf") == (one, "m.Q4.gguf")
    (one / "m.Q8.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match=r"several GGUF files \(m.Q4.gguf, m.Q8.gguf\)"):
        resolve_local_model(one)


@pytest.mark.parametrize("make,gguf,match", [
    (lambda p: p / "missing", None, "no such file or directory"),
    (lambda p: (p / "w.bin").write_bytes(b"x") and p / "w.bin", None, "must be a .gguf"),
    (lambda p: (p / "a.gguf").write_bytes(b"x") and p / "a.gguf", "b.gguf", "contradicts"),
    (lambda p: p, "x.gguf", "'x.gguf' is not in"),
    (lambda p: p, None, "neither config.json nor a .gguf"),
])
def test_gguf_config_errors_name_the_path(tmp_path, make, gguf, match) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_local_model(make(tmp_path), gguf)


def test_broken_gguf_file_is_a_config_error(tmp_path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    client = LocalTransformersClient(tmp_path / "broken.gguf")  # the weights load on first use ...
    with pytest.raises(ConfigError, match="could not load the GGUF file 'broken.gguf'"):
        client.load()
    config = LLMConfig(local_model=tmp_path / "broken.gguf", max_retries=0)
    with pytest.raises(ConfigError, match="could not load"):  # ... and a bad model stops the whole run
        generate_llm_questions(CORPUS, config, tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match="needs local_model"):  # pydantic's ValidationError
        LLMConfig(gguf_file="x.gguf")
