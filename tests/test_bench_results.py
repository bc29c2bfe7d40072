"""Benchmark result files round-trip, and the chapters' view of them names their origin, not targets."""
import pandas as pd

from dstutor.bench import RESULTS_DIR, load_results, save_results


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
