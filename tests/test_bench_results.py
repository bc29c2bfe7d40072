"""Benchmark result files round-trip, and the chapters' view of them names their origin, not targets."""
import pandas as pd

from dstutor.bench import RESULTS_DIR, load_results, save_results
from dstutor.chapters import REPO_ROOT


def test_results_round_trip_with_origin_and_targets_apart(tmp_path):
    table = pd.DataFrame({"seconds": [1.5, 2.0]}, index=["a", "b"])
    save_results("demo", table, "A took **1.5 s**.", {"a ≤ 2 s": True}, results_dir=tmp_path)
    loaded = load_results("demo", tmp_path)
    pd.testing.assert_frame_equal(loaded.table, table)
    assert loaded.targets == {"a ≤ 2 s": True}
    assert "Not measured by this chapter: from `make bench` on" in loaded.summary
    assert "target" not in loaded.summary.lower()
    assert load_results("missing", tmp_path) is None


def test_committed_results_keep_targets_out_of_what_readers_see():
    for path in RESULTS_DIR.glob("*.json"):
        assert "target" not in load_results(path.stem).summary.lower(), path.name


def book_runtime():
    """bench/book_runtime.py as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util

    from dstutor.chapters import REPO_ROOT
    spec = importlib.util.spec_from_file_location("book_runtime", REPO_ROOT / "bench" / "book_runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_chapter_run_splits_into_its_own_time_and_the_models_it_built():
    bench = book_runtime()
    records = {"model-a": {"seconds": 300.0, "needs": ["blocks"]}, "blocks": {"seconds": 40.0, "needs": ["tok"]},
               "tok": {"seconds": 15.0, "needs": []}, "model-b": {"seconds": 99.0, "needs": []}}
    # The chapter built model-a (its blocks and tokenizer were cached) and loaded the tokenizer.
    log = [{"artefact": "blocks", "built": False}, {"artefact": "model-a", "built": True},
           {"artefact": "tok", "built": False}]
    row = bench.chapter_account(420.0, log, records)
    assert row["warm-cache seconds"] == 120.0 and row["build seconds here"] == 300.0
    assert row["cold-cache seconds"] == 120.0 + 300 + 40 + 15 and row["models used"] == 3
    assert bench.chapter_account(50.0, [], records)["cold-cache seconds"] == 50.0


def test_the_budget_allows_two_long_chapters_and_no_chapter_over_the_long_limit():
    bench = book_runtime()
    table = pd.DataFrame({"warm-cache seconds": [100.0, 350.0, 400.0], "seconds": [100.0, 350.0, 400.0]},
                         index=["00", "01", "02"])
    assert all(bench.budget_targets(table).values())
    table.loc["03"] = [301.0, 301.0]
    targets = bench.budget_targets(table)
    assert [met for name, met in targets.items() if "at most" in name] == [False]
    assert any("01, 02, 03" in name for name in targets)
    table.loc["03"] = [481.0, 2000.0]
    assert not any(met for name, met in bench.budget_targets(table).items() if "every chapter" in name or "book" in name)


def test_the_book_budget_counts_every_model_the_chapters_need_once():
    bench = book_runtime()
    table = pd.DataFrame({"warm-cache seconds": [1000.0, 1000.0], "seconds": [1000.0, 1000.0]}, index=["00", "01"])
    assert [met for name, met in bench.budget_targets(table, 300.0).items() if "book" in name] == [True]
    assert [met for name, met in bench.budget_targets(table, 401.0).items() if "book" in name] == [False]
    assert bench.book_seconds(table, 401.0) == 2401.0
    table["seconds"] = [1500.0, 1000.0]  # this build itself built 500 s of models
    assert bench.book_seconds(table, 0.0) == 2500.0


def test_cell_seconds_come_from_the_executed_timestamps():
    import nbformat
    bench = book_runtime()
    cell = nbformat.v4.new_code_cell("# a comment\ntrain(steps)")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-12-06T10:00:00.000000Z",
                                  "shell.execute_reply": "2026-12-06T10:01:30.500000Z"}
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("x"), nbformat.v4.new_code_cell("1"), cell])
    assert bench.cell_seconds(notebook) == [(2, 90.5, "train(steps)")]


def test_every_benchmark_script_compiles_on_this_python():
    # model_speed.py and trainer_overhead.py once held a multi-line f-string field, valid only from Python 3.12
    for script in sorted((REPO_ROOT / "bench").glob("*.py")):
        compile(script.read_text(), str(script), "exec")
