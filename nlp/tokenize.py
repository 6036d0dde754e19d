"""Text normalisation and jieba tokenising with a user dictionary of interest terms.

Everything that matches keywords sees text through :func:`normalize`: full-width forms
folded (NFKC), lower case, traditional Chinese converted to simplified (OpenCC ``t2s``).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencc import OpenCC

_DICTS = resources.files("nlp") / "dicts"

# WeChat/WeCom render stickers and media as bracketed codes: [捂脸] [图片] [语音] …
WECHAT_CODE = re.compile(r"\[[^\[\]\s]{1,8}\]")
URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\S{1,20}(?:\s|$)")


def read_lines(name: str) -> list[str]:
    """Return the non-empty, non-comment lines of a packaged dictionary file."""
    text = (_DICTS / name).read_text(encoding="utf-8")
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


_t2s_lock = threading.Lock()
_t2s_inst: OpenCC | None = None


def _t2s() -> OpenCC:
    # Built on first use (OpenCC loads its dictionaries), shared: converting is read-only.
    global _t2s_inst
    with _t2s_lock:
        if _t2s_inst is None:
            import opencc

            _t2s_inst = opencc.OpenCC("t2s")
        return _t2s_inst


def to_simplified(text: str) -> str:
    """Return text with traditional Chinese characters converted to simplified (OpenCC
    ``t2s``, the official C++ library); text that is simplified already is returned as is."""
    out = str(_t2s().convert(text))
    return text if out == text else out


def normalize(text: str) -> str:
    """Return text folded for matching: NFKC, lower case, simplified Chinese."""
    return to_simplified(unicodedata.normalize("NFKC", text).lower())


def strip_noise(text: str) -> str:
    """Return text without URLs, @mentions, WeChat sticker codes, emoji and punctuation."""
    text = URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = WECHAT_CODE.sub(" ", text)
    return "".join(c if _is_wordchar(c) else " " for c in text).strip()


@lru_cache(maxsize=4096)
def _is_wordchar(c: str) -> bool:
    # Letters (incl. CJK) and digits carry content; symbols, emoji, punctuation do not.
    return unicodedata.category(c)[0] in "LN"


_base_lock = threading.Lock()
_base: tuple[dict[str, int], int] | None = None


def _base_dictionary() -> tuple[dict[str, int], int]:
    """Return jieba's default prefix dictionary, loaded once per process (~0.7 s); each
    Tokenizer works on its own copy (~10 ms), so words one adds stay its own."""
    global _base
    with _base_lock:
        if _base is None:
            import jieba

            # jieba logs "Building prefix dict…" to stderr at DEBUG: keep it quiet.
            logging.getLogger("jieba").setLevel(logging.WARNING)
            tk = jieba.Tokenizer()
            tk.initialize()
            _base = (tk.FREQ, tk.total)
        return _base


class Tokenizer:
    """jieba with a private dictionary: built once, lazily, on first use (~0.6 s).

    Uses a private ``jieba.Tokenizer`` (never the global one) so that other code's words
    do not leak in and ours do not leak out.
    """

    def __init__(self, *, terms: Iterable[str] = (), stopwords: Iterable[str] | None = None
                 ) -> None:
        self._terms: set[str] = set()
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._jieba: Any = None  # jieba.Tokenizer (untyped)
        words = read_lines("stopwords.txt") if stopwords is None else list(stopwords)
        self.stopwords = frozenset(normalize(w) for w in words)
        self.add_terms(terms)

    def add_terms(self, terms: Iterable[str]) -> None:
        """Teach the tokeniser words that must stay one token (敏感肌, 辅食添加)."""
        with self._lock:
            for t in terms:
                n = normalize(t).strip()
                if n and " " not in n and n not in self._terms:
                    self._terms.add(n)
                    self._pending.append(n)

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._jieba is None:
                import jieba

                freq, total = _base_dictionary()
                tk = jieba.Tokenizer()
                tk.FREQ, tk.total, tk.initialized = dict(freq), total, True
                self._jieba = tk
            if self._pending:
                tk = self._jieba
                for w in self._pending:
                    tk.add_word(w)
                self._pending.clear()
            return self._jieba

    def warm(self) -> None:
        """Load the dictionary now instead of on the first message."""
        self._tokenizer()

    def cut(self, text: str) -> list[str]:
        """Return every token of already-normalised text, stop words and noise included."""
        tk = self._tokenizer()
        return [t for t in tk.lcut(text, HMM=True) if t.strip()]

    def tokens(self, text: str) -> list[str]:
        """Return the content tokens of raw text: normalised, noise and stop words removed."""
        clean = strip_noise(normalize(text))
        if not clean:
            return []
        return [t for t in self.cut(clean) if t not in self.stopwords and t.strip()]
