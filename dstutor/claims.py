"""Claimed vs measured: the five guides the course tests, how chapters cite them, and one claims table.

Every chapter that tests a guide's number shows it with `claims_table`: the same columns everywhere,
and a verdict computed by a rule the row states, never typed in.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Source:
    """One of the course's source guides: the short English title chapters cite, and its full title."""

    short: str
    title: str
    author: str


SOURCES = {  # keyed by the file-name prefix of the guide
    "000": Source("Training essentials", "深度进阶:DeepSeek训练精要指南", "not named"),
    "001": Source("Hyper-parameters to regularisation", "DeepSeek模型优化全攻略:从超参数到正则化的进阶实践",
                  "热心市民鹿先生"),
    "002": Source("R1 fine-tuning", "Deepseek R1微调:从理论到实践的模型优化指南", "很菜不狗"),
    "003": Source("Full training pipeline", "如何深度定制AI:DeepSeek模型训练全流程指南", "not named"),
    "004": Source("Building efficient models", "深度探索:DeepSeek构建高效模型的实践指南", "carzy"),
}


def cite(source: str, section: str | None = None) -> str:
    """The citation chapters print, e.g. cite("002", "3.2") → "[R1 fine-tuning §3.2]"."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; the guides are {sorted(SOURCES)}")
    return f"[{SOURCES[source].short}{f' §{section}' if section else ''}]"


def sources_table() -> pd.DataFrame:
    """The guides as the book's sources page lists them."""
    return pd.DataFrame([{"cited as": cite(key), "full title": s.title, "author": s.author}
                         for key, s in SOURCES.items()])


VERDICTS = ("holds", "does not hold", "not testable here")


@dataclass(frozen=True)
class Verdict:
    """An outcome and the rule (or the reason) behind it."""

    outcome: str
    rule: str

    def __post_init__(self):
        if self.outcome not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.outcome!r}")

    def __str__(self) -> str:
        return f"{self.outcome}: {self.rule}"


def check(holds: bool, rule: str) -> Verdict:
    """The verdict of a testable claim: `rule` says what had to be true for it to hold."""
    return Verdict("holds" if holds else "does not hold", rule)


def not_testable(why: str) -> Verdict:
    """The verdict of a claim this machine cannot test, with the reason."""
    return Verdict("not testable here", why)


@dataclass(frozen=True)
class Claim:
    """One row of a claimed-vs-measured table."""

    source: str      # guide key ("001") ...
    section: str     # ... and section ("1.2"): cited as [short title §section]
    claim: str       # the claim as the guide states it (translated)
    setting: str     # what this chapter measured it on
    measured: str    # the measured value, formatted
    verdict: Verdict


COLUMNS = ["source", "claim", "setting here", "measured here", "verdict"]
COLOURS = {"holds": "#e6f4ea", "does not hold": "#fce8e6", "not testable here": "#f1f3f4"}


def claims_frame(claims: Iterable[Claim]) -> pd.DataFrame:
    """The claims as a DataFrame with the course's columns."""
    rows = [[cite(c.source, c.section), c.claim, c.setting, c.measured, str(c.verdict)] for c in claims]
    if not rows:
        raise ValueError("claims_table needs at least one claim")
    return pd.DataFrame(rows, columns=COLUMNS)


def claims_table(claims: Iterable[Claim]):
    """The claimed-vs-measured table every chapter shows: verdict cells coloured by outcome."""
    frame = claims_frame(claims)

    def colour(cell: str) -> str:
        return f"background-color: {COLOURS[cell.split(':')[0]]}"

    return (frame.style.hide(axis="index").map(colour, subset=["verdict"])
            .set_properties(**{"text-align": "left", "white-space": "normal"}))
