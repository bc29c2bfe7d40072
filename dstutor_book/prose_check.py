"""Find results typed into a chapter's prose instead of computed by its cells.

The course's rule: a sentence that states a result gets it from a cell. This check reads the
markdown of an *executed* chapter and reports each measured-looking quantity (a percentage, a
ratio "2.5×", seconds, bytes, nats, passes, or a number ≥ 1 with two or more decimals, like a loss) that no cell
output contains. Run on a smoke-mode execution, a number typed from a full-mode run fails too.
It also reports typed verdicts, words that state an outcome ("beats", "at chance", "the formula
holds", "never answers", "rarely"), outside questions and conditionals; a definition that uses such
a word ("shared experts are always on") is not caught because the list names outcomes only.

Exempt, because they are not measurements of this chapter: text in quotes (a guide's claim),
math, inline code, sentences that cite a source (§, a [guide] citation, "Table"), and the
"References" and "What DeepSeek actually does" sections (published facts, cited there).
"""
from __future__ import annotations

import re

import nbformat

UNITS = (r"%|×|x\b|\s?(?:ms|s|seconds?|minutes?|[KMGT]i?B|tokens/s|nats?|pass(?:es)?|times|numbers|"
         r"points|GFLOP/s)\b")
QUANTITY = re.compile(r"(?<![\w.§/^-])(\d[\d,]*(?:\.\d+)?)\s?(?:" + UNITS + r")|(?<![\w.§/^-])([1-9]\d*\.\d{2,})\b")
EXEMPT_TEXT = [re.compile(p, re.S) for p in (r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"`[^`\n]*`", r"\"[^\"\n]*\"",
                                             r"“[^”]*”", r"<[^>\n]*>")]
CITES = re.compile(r"§|\[[A-Z][\w -]+\]|\bTable\b")
EXEMPT_SECTIONS = ("## References", "## What DeepSeek actually does")
VERDICT = re.compile(
    r"\b(?:beats?|outperform(?:s|ed)?|wins?|won|pays? off|paid off|at chance|no (?:clear )?difference|"
    r"nothing separates|separates? (?:them|the \w+|it)\b|(?:formula|claim|rule|recipe) (?:holds|fails|held|failed)|"
    r"never (?:answers?|learns?|helps?|wins?|converges?|stops?)|rarely|seldom|really hurts|"
    r"(?:is|are|was|were|ran|runs?) (?:\S+ ){0,2}(?:faster|slower|better|worse) than|(?:faster|slower) by)\b", re.I)
OPEN = re.compile(r"\?\s*$|\b(?:whether|if|should|would|could)\b", re.I)  # a question or a condition states no result


def _plain(number: str) -> str:
    return number.replace(",", "")


def output_text(notebook: nbformat.NotebookNode) -> str:
    """Every code cell's outputs as one string, thousands separators removed."""
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(out.get("text", ""))
            parts += [str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return _plain("\n".join(parts))


def prose_sentences(notebook: nbformat.NotebookNode) -> list[str]:
    """The markdown sentences the check reads: exempt text blanked, exempt sections skipped."""
    kept, skipping = [], False
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if re.match(r"#{1,2} ", line):  # a chapter or section heading starts or ends a skipped section
                skipping = line.strip().startswith(EXEMPT_SECTIONS)
            if not skipping:
                kept.append(line)
        kept.append("")
    text = "\n".join(kept)
    for pattern in EXEMPT_TEXT:
        text = pattern.sub(" ", text)
    return [s for s in re.split(r"(?<=[.:;?!])\s+|\n\s*(?:[-*|#]+|\d+\.)\s|\n\n", text)
            if s.strip() and not CITES.search(s)]


def typed_quantities(notebook: nbformat.NotebookNode) -> list[str]:
    """Measured-looking quantities in the prose that no cell output contains: one message each."""
    outputs = output_text(notebook)
    problems = []
    for sentence in prose_sentences(notebook):
        for match in QUANTITY.finditer(sentence):
            number = _plain(match.group(1) or match.group(2))
            if not re.search(rf"(?<![\d.]){re.escape(number)}(?!\d)", outputs):
                problems.append(f"{match.group(0).strip()!r} in: {' '.join(sentence.split())[:160]}")
    return problems


def typed_verdicts(notebook: nbformat.NotebookNode) -> list[str]:
    """Sentences of prose that state an outcome in words (VERDICT) outside a question or condition: one message each."""
    return [f"{found.group(0)!r} in: {' '.join(sentence.split())[:160]}" for sentence in prose_sentences(notebook)
            if (found := VERDICT.search(sentence)) and not OPEN.search(sentence)]
