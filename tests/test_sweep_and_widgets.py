"""Grid search over model and training fields, and the hyper-parameter panel's logic (no browser needed)."""
import datasets
import pandas as pd
import pytest

from test_trainer import pattern_batches, tiny_model

from dstutor.train import TrainConfig, grid_search, with_values
from dstutor.viz.training import grid_heatmap
from dstutor.widgets import HyperParameterPanel


@pytest.fixture
def blocks():
    rows = [seq.tolist() for batch in pattern_batches(4, batch=8, seq=16) for seq in batch]
    return datasets.Dataset.from_dict({"input_ids": rows[:24]}), datasets.Dataset.from_dict({"input_ids": rows[24:]})


def test_with_values_routes_each_field_to_its_config():
    configs = {"model": tiny_model().config, "train": TrainConfig(steps=10)}
    changed = with_values(configs, {"dropout": 0.2, "weight_decay": 0.0})
    assert changed["model"].dropout == 0.2 and changed["train"].weight_decay == 0.0
    assert configs["model"].dropout == 0.0  # the originals are untouched
    with pytest.raises(ValueError, match="'colour' must be a field"):
        with_values(configs, {"colour": 1})
    with pytest.raises(ValueError, match="dropout"):
        with_values(configs, {"dropout": 1.5})


def test_a_fine_tuning_method_from_a_panel_is_checked_before_it_trains():
    from dstutor.finetune import Method
    lora = Method("LoRA", lr=3e-3, lora_rank=8)
    with pytest.raises(ValueError, match="Method 'LoRA': lr=-0.001 must be > 0"):
        with_values({"method": lora}, {"lr": -1e-3})
    with pytest.raises(ValueError, match=r"unknown lora_targets \['mpl'\]"):
        Method("typo", lora_rank=4, lora_targets=("mpl",))
    assert with_values({"method": lora}, {"lora_rank": 4})["method"].lora_rank == 4


def test_with_values_needs_a_qualified_name_for_a_shared_field():
    configs = {"first": TrainConfig(steps=10), "second": TrainConfig(steps=20)}
    with pytest.raises(ValueError, match="qualify a shared name"):
        with_values(configs, {"steps": 5})
    changed = with_values(configs, {"second.steps": 5})
    assert (changed["first"].steps, changed["second"].steps) == (10, 5)


def test_grid_search_trains_every_combination(blocks):
    train = TrainConfig(steps=4, lr=1e-2, warmup_steps=0, progress=False, eval_every=2, eval_batches=1)
    results = grid_search({"weight_decay": [0.0, 0.1], "dropout": [0.0, 0.2]}, tiny_model().config, train,
                          *blocks, batch_size=4)
    assert len(results) == 4 and {"weight_decay", "dropout", "val_loss", "train_loss", "seconds"} <= set(results.columns)
    assert results.val_loss.nunique() == 4  # four different trainings
    figure = grid_heatmap(results, "weight_decay", "dropout")
    assert figure.data[0].z.shape == (2, 2)


def fake_run(model, train):
    steps = range(1, train.steps + 1)
    return pd.DataFrame({"step": steps, "loss": [train.lr * s for s in steps],
                         "val_loss": [None] * (train.steps - 1) + [train.lr + model.dropout]})


def test_panel_builds_controls_and_compares_runs():
    panel = HyperParameterPanel(fake_run, {"model": tiny_model().config, "train": TrainConfig(steps=10)},
                                {"lr": (1e-4, 1e-1, "log"), "steps": (5, 50), "schedule": ["cosine", "wsd"],
                                 "dropout": (0.0, 0.5)})
    kinds = {name: type(control).__name__ for name, control in panel.controls.items()}
    assert kinds == {"lr": "FloatLogSlider", "steps": "IntSlider", "schedule": "Dropdown", "dropout": "FloatSlider"}
    panel.controls["dropout"].value = 0.2
    panel.button.click()  # what the Run button does in Lab
    panel.controls["steps"].value = 20
    panel.run()
    assert list(panel.results.steps) == [10, 20] and panel.results.val_loss.iloc[0] == pytest.approx(0.2 + 3e-3)
    assert len(panel.histories) == 2 and "done" in panel.message.value


def test_panel_records_a_run_made_before_with_its_starting_values():
    configs = {"model": tiny_model().config, "train": TrainConfig(steps=10)}
    panel = HyperParameterPanel(fake_run, configs, {"lr": (1e-4, 1e-1, "log"), "steps": (5, 50)})
    panel.record(fake_run(**configs), seconds=1.5)  # what a chapter does with a run it already trained
    assert list(panel.results.run) == ["run 1"] and panel.results.seconds.iloc[0] == 1.5
    assert panel.results.steps.iloc[0] == 10 and "run 1 done" in panel.message.value
    panel.controls["steps"].value = 20
    panel.run()
    assert list(panel.results.run) == ["run 1", "run 2"] and len(panel.histories) == 2


def test_panel_summarises_and_plots_any_history_it_is_given():
    import matplotlib.pyplot as plt

    def rewards_run(model, train):  # a history without losses, as GRPO logs it
        return pd.DataFrame({"step": range(1, train.steps + 1), "reward": [train.lr * 100] * train.steps})

    drawn = []

    def plot(histories):
        drawn.append(list(dict.fromkeys(histories.variant)))
        return plt.figure()

    panel = HyperParameterPanel(rewards_run, {"model": tiny_model().config, "train": TrainConfig(steps=4)},
                                {"lr": (1e-4, 1e-1, "log")}, summary=lambda h: {"reward": h.reward.mean()}, plot=plot)
    panel.controls["lr"].value = 1e-2
    panel.run()
    panel.controls["lr"].value = 1e-3
    panel.run()
    assert panel.results.reward.tolist() == pytest.approx([1.0, 0.1]) and "val_loss" not in panel.results
    assert drawn == [["run 1"], ["run 1", "run 2"]] and "run 2 done: reward 0.100" in panel.message.value
    assert not plt.get_fignums()  # shown in the panel's output, then closed: not drawn again below the cell


def test_panel_shows_a_readable_error_for_an_invalid_combination():
    panel = HyperParameterPanel(fake_run, {"model": tiny_model().config, "train": TrainConfig(steps=10, warmup_steps=8)},
                                {"steps": (1, 50)})
    panel.controls["steps"].value = 5  # fewer steps than warmup steps
    assert panel.run() is None and "Invalid settings" in panel.message.value and "warmup_steps" in panel.message.value
    assert panel.results.empty


def test_panel_rejects_unknown_fields():
    with pytest.raises(ValueError, match="learning_rate"):
        HyperParameterPanel(fake_run, {"train": TrainConfig()}, {"learning_rate": (0, 1)})
