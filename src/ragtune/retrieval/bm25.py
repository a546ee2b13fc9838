"""BM25 over a BEIR corpus with bm25s, tokenised for English (stopwords + Snowball stems) or Chinese (jieba).

bm25s does the indexing and scoring; this module only decides how text becomes tokens, because bm25s' built-in
tokenizer splits on ``\\w\\w+`` and would treat a whole Chinese sentence as one "word".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError
from ragtune.lang import detect_language

logger = logging.getLogger(__name__)

LANGUAGES = ("auto", "en", "zh")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # the scikit-learn / bm25s default token pattern
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_HAS_WORD_CHAR = re.compile(r"\w")


def doc_text(doc: dict) -> str:
    """The text ragtune indexes for a document: ``title + " " + text`` (BEIR's and sentence-transformers' habit)."""
    title = str(doc.get("title") or "").strip()
    text = str(doc.get("text") or "")
    return f"{title} {text}".strip() if title else text.strip()


def _jieba() -> object:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba logs "Building prefix dict ..." at INFO on first use
    return jieba


class Tokenizer:
    """Turns text into BM25 terms for one language.

    - ``en``: lower-case ``\\w\\w+`` words, English stopwords removed, Snowball-stemmed (PyStemmer). Words that
      contain CJK characters are further cut by jieba, so a stray Chinese document in an English corpus still
      gets sensible terms.
    - ``zh``: ``jieba.lcut_for_search`` (words plus their shorter sub-words, which helps recall), lower-cased,
      punctuation and Chinese/English stopwords dropped; Latin words inside Chinese text are stemmed too.
    """

    def __init__(self, language: str = "en", *, stopwords: bool = True, stem: bool = True):
        if language not in ("en", "zh"):
            raise ConfigError(f"language={language!r}: a tokenizer needs 'en' or 'zh' (resolve 'auto' first)")
        from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN

        self.language = language
        words: set[str] = set()
        if stopwords:
            words = set(STOPWORDS_EN) | (set(STOPWORDS_CHINESE) if language == "zh" else set())
        self.stopwords = frozenset(words)
        self._stem: Callable[[str], str] | None = None
        if stem:
            import Stemmer

            self._stem = Stemmer.Stemmer("english").stemWord
        self._cache: dict[str, str] = {}  # word -> stem; vocabularies are small next to corpora

    def _stemmed(self, word: str) -> str:
        if self._stem is None or _CJK.search(word):
            return word
        stem = self._cache.get(word)
        if stem is None:
            stem = self._cache[word] = self._stem(word)
        return stem

    def _raw_tokens(self, text: str) -> list[str]:
        if self.language == "zh":
            return [t.strip() for t in _jieba().lcut_for_search(text)]
        tokens: list[str] = []
        for word in _WORD.findall(text):
            if _CJK.search(word):
                tokens.extend(t.strip() for t in _jieba().lcut_for_search(word))
            else:
                tokens.append(word)
        return tokens

    def __call__(self, text: str) -> list[str]:
        out = []
        for tok in self._raw_tokens(text.lower()):
            if not tok or tok in self.stopwords or not _HAS_WORD_CHAR.search(tok):
                continue
            out.append(self._stemmed(tok))
        return out


class BM25Retriever:
    """Okapi BM25 (bm25s, Lucene variant) over ``title + " " + text``.

    ``k1=0.9, b=0.4`` are Anserini's / BEIR's defaults. ``language="auto"`` picks the tokenizer from a sample of
    the corpus (:func:`ragtune.lang.detect_language`).
    """

    def __init__(self, k1: float = 0.9, b: float = 0.4, language: str = "auto", *, stopwords: bool = True,
                 stem: bool = True, show_progress: bool | None = None):
        if language not in LANGUAGES:
            raise ConfigError(f"language={language!r} is not supported; use one of {', '.join(LANGUAGES)}")
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 parameters k1={k1}, b={b}: need k1 >= 0 and 0 <= b <= 1")
        self.k1, self.b, self.language = k1, b, language
        self.stopwords, self.stem = stopwords, stem
        self.show_progress = show_progress
        self.tokenizer: Tokenizer | None = None
        self.doc_ids: list[str] = []
        self._bm25 = None
        self.timings: dict[str, float] = {}

    @property
    def resolved_language(self) -> str | None:
        return self.tokenizer.language if self.tokenizer else None

    def _progress(self) -> bool:
        if self.show_progress is not None:
            return self.show_progress
        return logger.getEffectiveLevel() <= logging.INFO

    def index(self, corpus: Corpus) -> BM25Retriever:
        """Tokenise and index ``corpus`` (``{doc_id: {"title", "text"}}``); returns ``self``."""
        import bm25s

        if logging.getLogger("bm25s").level == logging.DEBUG:
            # bm25s sets its own logger to DEBUG on import, which floods any root handler; keep warnings only.
            logging.getLogger("bm25s").setLevel(logging.WARNING)
        if not corpus:
            raise ConfigError("corpus is empty: BM25 needs at least one document to index")
        start = time.perf_counter()
        self.doc_ids = list(corpus)
        texts = [doc_text(corpus[d]) for d in self.doc_ids]
        language = self.language
        if language == "auto":
            step = max(1, len(texts) // 500)  # a spread-out sample, not just the first documents
            language = detect_language(texts[::step], sample=500)
        self.tokenizer = Tokenizer(language, stopwords=self.stopwords, stem=self.stem)
        tokens = [self.tokenizer(t) for t in texts]
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        self._bm25.index(tokens, show_progress=self._progress())
        self.timings["index_s"] = time.perf_counter() - start
        logger.info("BM25 index: %d documents, language %s, %d terms, %.1f s", len(texts), language,
                    len(self._bm25.vocab_dict), self.timings["index_s"])
        return self

    def scores(self, query: str):
        """BM25 scores of ``query`` against every indexed document, a numpy array aligned with ``self.doc_ids``."""
        if self._bm25 is None or self.tokenizer is None:
            raise ConfigError("BM25Retriever.scores() was called before index(corpus)")
        return self._bm25.get_scores_from_ids(self._bm25.get_tokens_ids(self.tokenizer(query)))

    def search(self, queries: Queries, top_k: int = 100) -> Run:
        """Top ``top_k`` documents per query as a run ``{query_id: {doc_id: score}}``.

        Documents that share no term with the query (score 0) are left out, so a run may hold fewer than
        ``top_k`` documents for a query.
        """
        if self._bm25 is None or self.tokenizer is None:
            raise ConfigError("BM25Retriever.search() was called before index(corpus)")
        if top_k < 1:
            raise ConfigError(f"top_k={top_k}: must be at least 1")
        start = time.perf_counter()
        qids = list(queries)
        k = min(top_k, len(self.doc_ids))
        run: Run = {}
        if qids:
            q_tokens = [self.tokenizer(queries[q]) for q in qids]
            docs, scores = self._bm25.retrieve(q_tokens, k=k, show_progress=self._progress())
            for qid, idx_row, score_row in zip(qids, docs.tolist(), scores.tolist(), strict=True):
                run[qid] = {self.doc_ids[i]: float(s) for i, s in zip(idx_row, score_row, strict=True) if s > 0}
        self.timings["search_s"] = time.perf_counter() - start
        return run
