"""Regression tests for training that silently went wrong: fp16 overflow, skipped steps, warmup, seeding,
early stopping vs the final checkpoint, resuming without replaying data."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from test_trainer import pattern_batches, tiny_model

from dstutor.models.moe import DeepSeekMoE
from dstutor.train import NonFiniteError, TrainConfig, Trainer, lr_multiplier, with_values
from dstutor.train.callbacks import EarlyStopping

QUIET = dict(progress=False, eval_every=0)


class OverflowOn(nn.Module):
    """The tiny model, except that on the given forward calls (1-based) its gradients overflow to inf.

    The loss stays finite: exactly what an fp16 overflow in the backward pass looks like to the loop.
    It records each forward's expert load and what the loop told it after each optimiser step.
    """

    def __init__(self, model: nn.Module, overflow_calls: set[int]):
        super().__init__()
        self.model, self.overflow_calls, self.calls = model, overflow_calls, 0
        self.loads, self.applied, self.bias_changes = [], [], []

    def forward(self, ids, labels=None, **options):
        self.calls += 1
        out = self.model(ids, labels=labels, **options)
        if self.calls in self.overflow_calls:
            out.logits.register_hook(lambda grad: torch.full_like(grad, float("inf")))
        self.loads.append(out.expert_load.detach().clone())
        return out

    def after_optimizer_step(self, applied: bool = True) -> None:
        before = self._bias()
        self.model.after_optimizer_step(applied=applied)
        self.applied.append(applied)
        self.bias_changes.append(self._bias() - before)

    def _bias(self) -> torch.Tensor:
        moe = [m for m in self.model.modules() if isinstance(m, DeepSeekMoE)]
        return torch.stack([m.gate.e_score_correction_bias.clone() for m in moe])


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fp16_overflow_is_skipped_and_the_scale_halved_not_fatal():
    model = OverflowOn(tiny_model(), overflow_calls={2, 4})
    snapshots = []
    history = Trainer(steps=6, precision="fp16", lr=1e-2, warmup_steps=2, **QUIET,
                      callbacks=[lambda trainer, m, row: snapshots.append(weights(m))]).fit(model, pattern_batches())
    assert history.skipped.tolist() == [False, True, False, True, False, False]
    assert history.loss_scale.tolist() == [65536.0, 32768.0, 32768.0, 16384.0, 16384.0, 16384.0]
    for skipped_step in (1, 3):  # 0-based rows: the weights did not move during a skipped step
        assert all(torch.equal(snapshots[skipped_step][k], snapshots[skipped_step - 1][k]) for k in snapshots[0])
    assert not all(torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[0])


def test_fp16_scale_that_keeps_collapsing_stops_the_run():
    model = OverflowOn(tiny_model(), overflow_calls=set(range(1, 100)))
    with pytest.raises(NonFiniteError, match="loss scale collapsed"):
        Trainer(steps=40, precision="fp16", **QUIET).fit(model, pattern_batches())
    assert model.calls == 17  # 2**16 halved 17 times is below 1


def test_gradient_overflow_outside_fp16_still_stops_by_default():
    with pytest.raises(NonFiniteError, match="step 1: gradient norm is"):
        Trainer(steps=3, **QUIET).fit(OverflowOn(tiny_model(), {2}), pattern_batches())


def test_skipped_step_advances_the_schedule_discards_its_loads_and_is_checkpointed(tmp_path):
    model = OverflowOn(tiny_model(bias_update_speed=0.01), overflow_calls={2, 5})
    history = Trainer(steps=5, lr=1e-2, warmup_steps=2, nonfinite="skip", **QUIET).fit(
        model, pattern_batches(), checkpoint_dir=tmp_path)
    assert history.skipped.tolist() == [False, True, False, False, True]
    schedule = lr_multiplier("cosine", 5, 2, 0.1)
    assert history.lr.tolist() == pytest.approx([1e-2 * schedule(s) for s in range(5)])  # no shift after a skip
    assert model.applied == [False if s else True for s in history.skipped]
    for step, (applied, change) in enumerate(zip(model.applied, model.bias_changes)):
        load = model.loads[step][1:]  # the MoE layer (layer 0 is dense)
        expected = 0.01 * (load.mean(-1, keepdim=True) - load).sign() if applied else torch.zeros_like(change)
        assert torch.allclose(change, expected), f"step {step + 1}: the bias moved by another step's load"
    assert (tmp_path / "step-0000005").is_dir()  # the final checkpoint, although the last step was skipped


def test_warmup_none_follows_the_final_steps():
    base = TrainConfig(steps=10)  # 10 % of 10 steps would be 1 warmup step
    assert Trainer(base, steps=1000).config.resolved_warmup_steps == 100
    assert with_values({"train": base}, {"steps": 400})["train"].resolved_warmup_steps == 40
    history = Trainer(base, steps=40, lr=1e-2, **QUIET).fit(tiny_model(), pattern_batches())
    assert history.lr.iloc[0] == pytest.approx(1e-2 / 4)  # warmup of 4 steps, not 1


def test_the_config_seed_decides_dropout_and_layer_drop():
    def run(seed, disturb):
        torch.manual_seed(disturb)  # whatever the notebook did before fit() must not matter
        model = tiny_model(dropout=0.2, layer_drop=0.3)
        return Trainer(steps=4, seed=seed, **QUIET).fit(model, pattern_batches()).loss.tolist()

    assert run(seed=1, disturb=10) == run(seed=1, disturb=20)
    assert run(seed=1, disturb=10) != run(seed=2, disturb=10)


@pytest.mark.parametrize("keep_last", [0, -1])
def test_keep_last_must_keep_something(keep_last):
    with pytest.raises(ValueError, match=f"keep_last={keep_last}"):
        Trainer(keep_last=keep_last)


def test_early_stopping_final_checkpoint_holds_the_restored_weights(tmp_path):
    model = tiny_model()
    stopper = EarlyStopping(patience=2)
    history = Trainer(steps=200, lr=0.3, warmup_steps=0, schedule="constant", eval_every=1, eval_batches=1,
                      progress=False, callbacks=[stopper]).fit(model, pattern_batches(), pattern_batches(1),
                                                               checkpoint_dir=tmp_path)
    assert len(history) < 200 and stopper.best_step < len(history)
    saved = load_file(tmp_path / f"step-{len(history):07d}" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items() if k in saved)


class CountingBatches(list):
    """A list of batches that counts how many batches were read, by iteration or by index."""

    reads = 0

    def __iter__(self):
        for item in super().__iter__():
            self.reads += 1
            yield item

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


def test_resume_seeks_instead_of_replaying(tmp_path):
    common = dict(steps=40, lr=1e-2, save_every=30, accumulation=2, **QUIET)
    Trainer(**{**common, "steps": 30}).fit(tiny_model(), pattern_batches(), checkpoint_dir=tmp_path)
    data = CountingBatches(pattern_batches())
    Trainer(**common).fit(tiny_model(), data, checkpoint_dir=tmp_path, resume=True)
    assert data.reads == (40 - 30) * 2  # only the batches of the remaining steps


def test_a_one_shot_iterator_that_runs_dry_is_a_clear_error():
    with pytest.raises(ValueError, match="yielded no batches"):
        Trainer(steps=10, **QUIET).fit(tiny_model(), iter(pattern_batches(2)))
