"""Cleaning a corpus with an honest report: every row is kept or dropped by exactly one named rule.

[Training essentials] §1.1 filters text with the regex `[^a-zA-Z0-9\\u4e00-\\u9fa5]` and checks quality with jieba;
here those are options among others, and the report shows what each rule costs.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import datasets
import pandas as pd

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except \t \n \r
ALNUM_HAN_WHITELIST = r"[^a-zA-Z0-9\u4e00-\u9fa5]"  # [Training essentials]: deletes every other character
BOILERPLATE = re.compile(r"(?im)^.*(project gutenberg|\*\*\* ?(start|end) of|all rights reserved|"
                         r"^#\s*copyright|^#\s*licensed under|www\.[a-z0-9-]+\.(com|org|net)).*$\n?")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")
SYMBOL = re.compile(r"[^\w\s]")
DEFAULT_STOPWORDS = frozenset("的 了 和 是 在 我 有 就 不 也 都 这 那 很 the a an of and to in is it".split())


@dataclass
class CleanConfig:
    """Which transformations and filters to apply, with their thresholds."""

    fold_fullwidth: bool = False      # NFKC (，→ ,  ＡＢＣ → ABC); breaks exact round-trips of CJK punctuation
    remove_control: bool = True       # drop control characters (keeps tab and newline)
    whitelist: str | None = None      # a regex of characters to DELETE, e.g. ALNUM_HAN_WHITELIST; None: off
    strip_boilerplate: bool = True    # delete licence/Gutenberg/URL lines
    min_chars: int = 10               # drop rows shorter than this after cleaning
    max_chars: int = 2_000_000        # drop rows longer than this (a 10 MB line is dropped, and reported)
    max_symbol_ratio: float = 0.5     # drop rows where punctuation/symbols exceed this share of characters
    max_repeated_line_ratio: float = 0.5  # drop rows whose lines are mostly copies of each other
    language: str | None = None       # "zh" or "en": drop rows whose script share is below min_language_ratio
    min_language_ratio: float = 0.3   # share of CJK (zh) or Latin letters (en) among non-space characters

    def validate(self) -> None:
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(f"need 0 ≤ min_chars ≤ max_chars, got {self.min_chars} and {self.max_chars}")
        if self.language not in (None, "zh", "en"):
            raise ValueError(f"language={self.language!r}: choose 'zh', 'en' or None")


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode bytes as UTF-8; invalid sequences become U+FFFD and are counted, never silently lost."""
    text = raw.decode("utf-8", errors="replace")
    return text, text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")


def normalize(text: str, fold_fullwidth: bool = False) -> str:
    """Unify newlines (\\r\\n, \\r → \\n) and Unicode form: NFC keeps full-width CJK punctuation, NFKC folds it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFKC" if fold_fullwidth else "NFC", text)


def transform(text: str, config: CleanConfig) -> str:
    """The text edits of a config (normalise, controls, whitelist, boilerplate), no dropping."""
    text = normalize(text, config.fold_fullwidth)
    if config.remove_control:
        text = CONTROL.sub("", text)
    if config.strip_boilerplate:
        text = BOILERPLATE.sub("", text)
    if config.whitelist:
        text = re.sub(config.whitelist, "", text)
    return text.strip()


def drop_reason(text: str, config: CleanConfig) -> str | None:
    """The first filter a (transformed) text fails, or None to keep it."""
    if len(text) < config.min_chars:
        return "too_short"
    if len(text) > config.max_chars:
        return "too_long"
    visible = re.sub(r"\s", "", text)
    if len(SYMBOL.findall(visible)) > config.max_symbol_ratio * len(visible):
        return "symbols"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= 4 and 1 - len(set(lines)) / len(lines) > config.max_repeated_line_ratio:
        return "repetition"
    if config.language:
        script = CJK if config.language == "zh" else LATIN
        if len(script.findall(visible)) < config.min_language_ratio * len(visible):
            return "language"
    return None


def clean_corpus(dataset: datasets.Dataset, config: CleanConfig | None = None,
                 text_column: str = "text") -> tuple[datasets.Dataset, pd.DataFrame]:
    """Apply a config; return the kept rows and a report where rows in = kept + Σ dropped per rule."""
    config = config or CleanConfig()
    config.validate()
    if len(dataset) == 0:
        raise ValueError("the corpus is empty: nothing to clean")

    def mark(row):
        cleaned = transform(row[text_column], config)
        return {text_column: cleaned, "_changed": cleaned != row[text_column],
                "_reason": drop_reason(cleaned, config) or "kept"}

    marked = dataset.map(mark, desc="cleaning")
    reasons = Counter(marked["_reason"])
    report = pd.DataFrame({"rows": pd.Series(reasons)}).rename_axis("outcome").sort_values("rows", ascending=False)
    report.loc["rows in"] = len(dataset)
    report.loc["text changed (kept or not)"] = sum(marked["_changed"])
    if reasons["kept"] == 0:
        raise ValueError(f"every row was filtered out: {dict(reasons)}; loosen the config "
                         f"(e.g. min_chars={config.min_chars}, language={config.language!r})")
    kept = marked.filter(lambda r: r["_reason"] == "kept").remove_columns(["_changed", "_reason"])
    return kept, report


def jieba_stats(texts: Iterable[str], stopwords: frozenset[str] = DEFAULT_STOPWORDS) -> dict[str, float]:
    """[Training essentials]'s jieba quality check: words per text, vocabulary size, stop-word share."""
    import jieba

    jieba.setLogLevel(60)  # silence the dictionary-loading banner
    counts, per_text = Counter(), []
    for text in texts:
        words = [w for w in jieba.lcut(text) if w.strip()]
        counts.update(words)
        per_text.append(len(words))
    if not per_text:
        raise ValueError("no texts given")
    total = sum(counts.values())
    return {"texts": len(per_text), "words_per_text": total / len(per_text), "vocabulary": len(counts),
            "stopword_share": sum(counts[w] for w in stopwords) / max(total, 1)}
