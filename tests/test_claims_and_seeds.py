"""Claims tables (sources, citations, verdicts) and multi-seed comparisons computed from spreads."""
from dataclasses import replace

import pandas as pd
import pytest

from test_sweep_and_widgets import blocks  # noqa: F401  (fixture)
from test_trainer import tiny_model

from dstutor.claims import SOURCES, Claim, check, cite, claims_frame, claims_table, not_testable, sources_table
from dstutor.train import TrainConfig, compare_sentence, final_values, grid_search, run_seeds, spread


def test_citations_use_the_short_title_and_section():
    assert cite("002", "3.2") == "[R1 fine-tuning §3.2]"
    assert cite("001") == "[Hyper-parameters to regularisation]"
    with pytest.raises(ValueError, match="unknown source '005'"):
        cite("005")
    table = sources_table()
    assert len(table) == len(SOURCES) == 5 and table["full title"].str.contains("deepseek", case=False).all()


def test_claims_table_has_the_same_columns_and_a_computed_verdict():
    rows = [Claim("001", "1.1", "warmup + cosine: −30 % training time", "nano, 80 steps", "−12 %",
                  check(-0.12 <= -0.30, "holds if the saving is ≥ 30 %")),
            Claim("001", "3.1", "FP8: 3.2× faster inference", "CPU", "—", not_testable("needs FP8 tensor cores"))]
    frame = claims_frame(rows)
    assert list(frame.columns) == ["source", "claim", "setting here", "measured here", "verdict"]
    assert frame.verdict.tolist() == ["does not hold: holds if the saving is ≥ 30 %",
                                      "not testable here: needs FP8 tensor cores"]
    html = claims_table(rows).to_html()
    assert "#fce8e6" in html and "#f1f3f4" in html  # verdict cells coloured by outcome
    with pytest.raises(ValueError, match="at least one claim"):
        claims_frame([])


def histories(values: dict[str, list[float]]) -> pd.DataFrame:
    """Fake per-seed histories: two steps per run, the last one carrying the given validation loss."""
    rows = []
    for variant, losses in values.items():
        for seed, loss in enumerate(losses):
            rows += [{"variant": variant, "seed": seed, "step": 1, "val_loss": None},
                     {"variant": variant, "seed": seed, "step": 2, "val_loss": loss}]
    return pd.DataFrame(rows)


def test_spread_and_sentence_when_the_seeds_separate_the_variants():
    summary = spread(final_values(histories({"MoE": [4.0, 4.1, 4.2], "dense": [4.5, 4.6, 4.7]})))
    assert summary.loc["MoE", "mean"] == pytest.approx(4.1) and summary.loc["MoE", "std"] == pytest.approx(0.1)
    sentence = compare_sentence(summary, "dense", "MoE")
    assert sentence.startswith("Over 3 seeds, MoE has the lower mean validation loss (4.100 ± 0.100 vs 4.600 ± 0.100")
    assert "do not overlap" in sentence and "gap 0.500" in sentence


def test_sentence_says_so_when_the_ranges_overlap():
    summary = spread(final_values(histories({"a": [4.0, 4.3, 4.6], "b": [4.1, 4.4, 4.5]})))
    assert "overlap: these seeds do not separate the two" in compare_sentence(summary, "a", "b")
    higher = compare_sentence(summary, "a", "b", what="accuracy", lower_is_better=False)
    assert "b has the higher mean accuracy" in higher


def test_run_seeds_trains_every_variant_per_seed_and_seeds_differ(blocks):  # noqa: F811
    train = TrainConfig(steps=3, lr=1e-2, warmup_steps=0, progress=False, eval_every=3, eval_batches=1)
    config = tiny_model().config
    runs = run_seeds({"moe": config, "dropout": config.replace(dropout=0.1)}, train, [0, 1], *blocks, batch_size=4)
    values = final_values(runs)
    assert list(values.index) == ["moe", "dropout"] and list(values.columns) == [0, 1]
    assert values.loc["moe", 0] != values.loc["moe", 1]  # a different seed is a different run
    again = run_seeds({"moe": config}, train, [1], *blocks, batch_size=4)
    assert final_values(again).loc["moe", 1] == values.loc["moe", 1]  # ... and the same seed the same run
    with pytest.raises(ValueError, match="at least one seed"):
        run_seeds({"moe": config}, train, [], *blocks, batch_size=4)


def test_run_seeds_reuses_given_runs_instead_of_training_them(blocks):  # noqa: F811
    train = TrainConfig(steps=3, lr=1e-2, warmup_steps=0, progress=False, eval_every=3, eval_batches=1)
    config = tiny_model().config
    variants = {"moe": config, "dropout": config.replace(dropout=0.1)}
    trained = run_seeds(variants, train, [0, 1], *blocks, batch_size=4)
    done = trained[(trained.variant == "moe") & (trained.seed == 0)].assign(loss=-1.0)  # marked, to see it reused
    runs = run_seeds(variants, train, [0, 1], *blocks, batch_size=4, done=done)
    assert (runs[(runs.variant == "moe") & (runs.seed == 0)].loss == -1.0).all()
    assert (runs[runs.loss == -1.0].seed == 0).all() and (runs[runs.loss == -1.0].variant == "moe").all()
    pd.testing.assert_frame_equal(final_values(runs), final_values(trained))  # same order, same results
    with pytest.raises(ValueError, match="'other'.*not among the variants"):
        run_seeds(variants, train, [0], *blocks, batch_size=4, done=done.assign(variant="other"))


def test_run_seeds_rejects_a_reused_run_of_another_length(blocks):  # noqa: F811
    train = TrainConfig(steps=3, lr=1e-2, warmup_steps=0, progress=False, eval_every=3, eval_batches=1)
    config = tiny_model().config
    trained = run_seeds({"moe": config}, train, [0], *blocks, batch_size=4)
    with pytest.raises(ValueError, match=r"'moe' at seed 0 has 2 steps.*train.steps is 3"):
        run_seeds({"moe": config}, train, [0], *blocks, batch_size=4, done=trained.iloc[:-1])
    longer = replace(train, steps=4)
    with pytest.raises(ValueError, match=r"'moe' at seed 0 has 3 steps.*train.steps is 4"):
        run_seeds({"moe": config}, longer, [0, 1], *blocks, batch_size=4, done=trained)


def test_grid_search_runs_each_cell_once_per_seed(blocks):  # noqa: F811
    train = TrainConfig(steps=2, lr=1e-2, warmup_steps=0, progress=False, eval_every=2, eval_batches=1)
    results = grid_search({"dropout": [0.0, 0.2]}, tiny_model().config, train, *blocks, batch_size=4, seeds=[0, 1, 2])
    assert len(results) == 6 and sorted(results.seed.unique()) == [0, 1, 2]
    assert results.groupby("dropout").val_loss.nunique().tolist() == [3, 3]
