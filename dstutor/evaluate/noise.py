"""Controlled input noise for robustness curves: typos, character swaps, full/half width, script changes.

Each kind touches about `level` of the characters it can change, and the same (text, level, seed)
always gives the same output, so a robustness curve can be rerun exactly.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache

from opencc import OpenCC

KINDS = ("typo", "swap", "width", "script")
COMMON = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"  # frequent characters a Chinese typo turns into


def _rng(text: str, kind: str, level: float, seed: int) -> random.Random:
    # A string seed hashes deterministically (unlike hash(), which changes per process).
    return random.Random(f"{seed}|{kind}|{level}|{text}")


def _typo(text: str, level: float, rng: random.Random) -> str:
    out = []
    for char in text:
        roll = rng.random()
        if char.isspace() or roll >= level:
            out.append(char)
        elif roll < level / 3:
            continue  # deleted
        elif roll < 2 * level / 3:
            out.append(rng.choice(COMMON) if "\u4e00" <= char <= "\u9fff" else chr(rng.randint(97, 122)))
        else:
            out.append(char + char)  # doubled, as a sticky key would
    return "".join(out)


def _swap(text: str, level: float, rng: random.Random) -> str:
    chars, i = list(text), 0
    while i < len(chars) - 1:
        if rng.random() < level:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 2  # a swapped pair is not swapped back
        else:
            i += 1
    return "".join(chars)


def _width(text: str, level: float, rng: random.Random) -> str:
    """ASCII ↔ full-width forms (U+FF01–FF5E, ideographic space): what IMEs and OCR produce."""
    out = []
    for char in text:
        code = ord(char)
        if rng.random() >= level:
            out.append(char)
        elif 0x21 <= code <= 0x7E:
            out.append(chr(code + 0xFEE0))
        elif 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif char == " ":
            out.append("\u3000")
        else:
            out.append(char)
    return "".join(out)


@cache
def _converters() -> tuple[OpenCC, OpenCC]:
    return OpenCC("s2t"), OpenCC("t2s")


def _script(text: str, level: float, rng: random.Random) -> str:
    """Simplified ↔ traditional per character (OpenCC's offline tables): a character converts to the other script."""
    to_traditional, to_simplified = _converters()
    out = []
    for char in text:
        if rng.random() >= level:
            out.append(char)
            continue
        traditional = to_traditional.convert(char)
        out.append(traditional if traditional != char else to_simplified.convert(char))
    return "".join(out)


NOISERS = {"typo": _typo, "swap": _swap, "width": _width, "script": _script}


def add_noise(text: str, kind: str, level: float, seed: int = 0) -> str:
    """text with noise of this kind on about `level` (0–1) of its characters; deterministic by seed."""
    if kind not in NOISERS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {list(KINDS)}")
    if not 0 <= level <= 1:
        raise ValueError(f"noise level must lie in [0, 1], got {level}")
    return text if level == 0 else NOISERS[kind](text, level, _rng(text, kind, level, seed))


def noisy(texts: Sequence[str], kind: str, level: float, seed: int = 0) -> list[str]:
    """add_noise applied to every text."""
    return [add_noise(text, kind, level, seed) for text in texts]
