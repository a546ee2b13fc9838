"""Prompts for question generation: built-in English and Chinese templates, a user's template file, few-shot.

A template is plain text with three placeholders, replaced literally (other braces, e.g. JSON examples, are left
alone):

- ``{context}`` the chunk (required)
- ``{n}``       how many questions to ask for
- ``{examples}`` a block of the user's real queries to imitate (empty without ``few_shot``)

Text above a line holding only ``---`` is the system message; without such a line the whole file is the user
message. The built-in templates are ``templates/en.txt`` and ``templates/zh.txt`` beside this module.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ragtune._io import open_text, text_sha1
from ragtune.errors import ConfigError
from ragtune.lang import detect_language

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("en", "zh")
_EXAMPLES_INTRO = {
    "en": "Real questions from our users look like the ones below. Match their style, length and tone, "
          "but do not reuse them:",
    "zh": "下面是用户真实提出的问题。请模仿它们的风格、长度和语气，但不要照搬：",
}


@dataclass(frozen=True)
class PromptTemplate:
    user: str
    system: str | None = None
    language: str = "en"
    source: str = "built-in"

    @classmethod
    def parse(cls, text: str, language: str, source: str) -> PromptTemplate:
        lines = text.strip("\n").splitlines()
        system = None
        if "---" in (line.strip() for line in lines):
            cut = [line.strip() for line in lines].index("---")
            system = "\n".join(lines[:cut]).strip() or None
            lines = lines[cut + 1:]
        user = "\n".join(lines).strip()
        if "{context}" not in user:
            raise ConfigError(f"prompt template {source}: the user part has no {{context}} placeholder, so the "
                              "chunk would never reach the model. Add {context} where the passage goes (and "
                              "{n} for the number of questions).")
        return cls(user=user, system=system, language=language, source=source)


def choose_language(texts: Iterable[str], setting: str = "auto") -> str:
    """``setting`` unless it is ``auto``; then the language detected from (a sample of) ``texts``."""
    if setting != "auto":
        if setting not in LANGUAGES:
            raise ConfigError(f"language={setting!r}: choose auto, {' or '.join(LANGUAGES)}")
        return setting
    return detect_language(texts)


def load_template(language: str = "en", prompt_file: str | Path | None = None) -> PromptTemplate:
    """The user's ``prompt_file`` when given, else the built-in template of ``language``."""
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise ConfigError(f"prompt_file={str(path)!r}: file not found. Give a text file with a {{context}} "
                              "placeholder, or leave it unset for the built-in prompt.")
        return PromptTemplate.parse(path.read_text(encoding="utf-8"), language, str(path))
    if language not in LANGUAGES:
        raise ConfigError(f"no built-in prompt for language {language!r}; choose {' or '.join(LANGUAGES)} or "
                          "give a prompt_file")
    path = TEMPLATES_DIR / f"{language}.txt"
    return PromptTemplate.parse(path.read_text(encoding="utf-8"), language, f"built-in {language}")


def load_few_shot(path: str | Path, count: int = 5, seed: int = 42) -> list[str]:
    """Up to ``count`` queries drawn (reproducibly) from ``path``: ``.jsonl`` with ``text``, else one per line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"few_shot={str(path)!r}: file not found. Give a file of real user queries "
                          "(.txt one per line, or BEIR queries.jsonl).")
    queries: list[str] = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if path.name.endswith((".jsonl", ".jsonl.gz")):
                try:
                    line = str(json.loads(line).get("text") or "").strip()
                except (json.JSONDecodeError, AttributeError):
                    raise ConfigError(f"few_shot {path}:{lineno}: not a JSON object with a 'text' field") from None
            if line:
                queries.append(line)
    if not queries:
        raise ConfigError(f"few_shot={str(path)!r}: the file holds no queries")
    unique = list(dict.fromkeys(queries))
    return random.Random(seed).sample(unique, min(count, len(unique)))


class PromptBuilder:
    """Renders the chat messages for one chunk; :attr:`hash` identifies the prompt in metadata and cache keys."""

    def __init__(self, template: PromptTemplate, per_chunk: int = 2, examples: list[str] | None = None):
        self.template = template
        self.per_chunk = per_chunk
        self.examples = list(examples or [])
        block = ""
        if self.examples:
            intro = _EXAMPLES_INTRO.get(template.language, _EXAMPLES_INTRO["en"])
            block = intro + "\n" + "\n".join(f"- {q}" for q in self.examples) + "\n"
        self._user = template.user.replace("{n}", str(per_chunk)).replace("{examples}", block)
        if block and "{examples}" not in template.user:  # a user template without the placeholder
            self._user = self._user.rstrip() + "\n\n" + block
        self.hash = text_sha1(json.dumps([template.system, self._user]))[:12]

    def messages(self, context: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.template.system}] if self.template.system else []
        msgs.append({"role": "user", "content": self._user.replace("{context}", context.strip())})
        return msgs

    @classmethod
    def from_config(cls, config, language: str) -> PromptBuilder:  # config: LLMConfig (import cycle avoided)
        examples = load_few_shot(config.few_shot, config.few_shot_count, config.seed) if config.few_shot else []
        builder = cls(load_template(language, config.prompt_file), config.per_chunk, examples)
        logger.info("prompt: %s template, %d questions per chunk%s (hash %s)", builder.template.source,
                    config.per_chunk, f", {len(examples)} few-shot examples" if examples else "", builder.hash)
        return builder
