"""Trainer switches and callbacks: clipping modes, label smoothing, checkpointing, compile, OOM, callbacks."""
import math

import pytest
import torch

from test_trainer import pattern_batches, tiny_model

from dstutor.models import DeepSeekConfig
from dstutor.train import Trainer
from dstutor.train.callbacks import (Callback, EarlyStopping, LiveLossPlot, MFUMeter, TensorBoardLogger,
                                     early_stopping_point, model_flops_per_token, peak_flops)

QUIET = dict(progress=False, eval_every=0)


def gradients_after_clipping(**config):
    model = tiny_model()
    trainer = Trainer(steps=1, **QUIET, **config)
    ids = pattern_batches(1)[0]
    model(ids, labels=ids).loss.backward()
    norm = trainer._clip(model)
    return norm, {name: p.grad.norm().item() for name, p in model.named_parameters() if p.grad is not None}


def test_per_parameter_clipping_caps_each_tensor_and_global_caps_the_total():
    raw_norm, raw = gradients_after_clipping(grad_clip=0)
    limit = 0.5 * max(raw.values())
    _, own = gradients_after_clipping(grad_clip=limit, clip_mode="per_parameter")
    assert all(n <= limit * 1.0001 for n in own.values())
    assert all(own[k] == pytest.approx(raw[k], rel=1e-6) for k in raw if raw[k] <= limit)  # small ones untouched
    norm, clipped = gradients_after_clipping(grad_clip=limit, clip_mode="global")
    assert norm == pytest.approx(raw_norm, rel=1e-6)  # the reported norm is the one before clipping
    assert math.sqrt(sum(n * n for n in clipped.values())) == pytest.approx(limit, rel=1e-4)


def test_label_smoothing_changes_the_training_loss_not_the_validation_loss():
    def confident_model():
        model = tiny_model()
        with torch.no_grad():
            model.lm_head.weight.mul_(300)  # peaked predictions, where smoothing makes a difference
        return model

    ids = pattern_batches(1)[0]
    model = confident_model()
    with torch.no_grad():
        out = model(ids, labels=ids)
        uniform = -torch.log_softmax(out.logits[:, :-1].float(), -1).mean()  # cross-entropy against uniform
    runs = {eps: Trainer(steps=1, lr=1e-9, label_smoothing=eps, **QUIET).fit(confident_model(), [ids], [ids])
            for eps in (0.0, 0.3)}
    assert runs[0.3].loss.iloc[0] == pytest.approx(0.7 * out.main_loss.item() + 0.3 * uniform.item(), rel=1e-4)
    assert abs(runs[0.3].loss.iloc[0] - runs[0.0].loss.iloc[0]) > 0.1
    assert runs[0.3].val_loss.iloc[0] == pytest.approx(runs[0.0].val_loss.iloc[0], rel=1e-5)


def test_gradient_checkpointing_gives_the_same_training():
    plain = Trainer(steps=3, **QUIET).fit(tiny_model(dropout=0.1), pattern_batches())
    checkpointed = Trainer(steps=3, gradient_checkpointing=True, **QUIET).fit(tiny_model(dropout=0.1), pattern_batches())
    assert checkpointed.loss.to_numpy() == pytest.approx(plain.loss.to_numpy(), rel=1e-5)


def test_gradient_checkpointing_on_a_model_without_it_is_refused_by_name():
    with pytest.raises(ValueError, match="Linear has no gradient_checkpointing_enable"):
        Trainer(steps=1, gradient_checkpointing=True, **QUIET).fit(torch.nn.Linear(4, 4), [torch.zeros(1, 4)])


def test_compiled_forward_trains_like_eager():
    # aot_eager traces the graph as inductor does but skips code generation (which takes minutes on 2 cores)
    eager = Trainer(steps=2, **QUIET).fit(tiny_model(), pattern_batches())
    compiled = Trainer(steps=2, compile="aot_eager", **QUIET).fit(tiny_model(), pattern_batches())
    assert compiled.loss.to_numpy() == pytest.approx(eager.loss.to_numpy(), rel=1e-4)


def test_out_of_memory_gives_advice():
    class Exhausted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, labels=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(torch.OutOfMemoryError, match=r"8 × 16 tokens.*accumulation=1.*gradient_checkpointing"):
        Trainer(steps=1, **QUIET).fit(Exhausted(), pattern_batches(1))


def test_early_stopping_stops_and_restores_the_best_weights():
    model = tiny_model()
    snapshots = {}

    def remember(trainer, model, row):
        if "val_loss" in row:
            snapshots[row["step"]] = {k: v.clone() for k, v in model.state_dict().items()}

    stopper = EarlyStopping(patience=2)
    # lr so high that validation loss gets worse after the first evaluations
    history = Trainer(steps=200, lr=0.3, warmup_steps=0, schedule="constant", eval_every=1, eval_batches=1,
                      progress=False, callbacks=[remember, stopper]).fit(model, pattern_batches(), pattern_batches(1))
    assert len(history) < 200
    best = history.val_loss.idxmin()
    assert history.step[best] == stopper.best_step and len(history) == stopper.best_step + 2
    assert all(torch.equal(v, snapshots[stopper.best_step][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("values, patience, min_delta, expected", [
    ([3.0, 2.0, 2.5, 2.4, 1.0], 2, 0.0, (1, 3)),   # two evaluations without a new best: stop at the second
    ([3.0, 2.0, 2.5, 1.5, 1.6], 2, 0.0, (3, None)),  # a new best resets the count
    ([3.0, 2.95, 2.9], 2, 0.1, (0, 2)),              # improvements smaller than min_delta do not count
    ([], 2, 0.0, (None, None)),
])
def test_early_stopping_point_replays_the_rule(values, patience, min_delta, expected):
    assert early_stopping_point(values, patience, min_delta) == expected


def test_replaying_early_stopping_on_a_full_run_matches_stopping_live():
    def run(callbacks):
        return Trainer(steps=60, lr=0.3, warmup_steps=0, schedule="constant", eval_every=1, eval_batches=1,
                       progress=False, callbacks=callbacks).fit(tiny_model(), pattern_batches(), pattern_batches(1))

    full = run([]).dropna(subset=["val_loss"])
    stopper = EarlyStopping(patience=2)
    stopped = run([stopper])
    best, stop = early_stopping_point(full.val_loss.tolist(), patience=2)
    assert stop is not None and full.step.iloc[stop] == len(stopped) < 60
    assert full.step.iloc[best] == stopper.best_step and full.val_loss.iloc[best] == stopper.best


def test_tensorboard_logger_writes_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(steps=4, eval_every=2, eval_batches=1, progress=False, callbacks=[TensorBoardLogger(tmp_path)]).fit(
        tiny_model(), pattern_batches(), pattern_batches(1))
    events = EventAccumulator(str(tmp_path)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/max_load_ratio", "val/loss"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def test_mfu_uses_config_flops_and_the_given_peak():
    config = DeepSeekConfig.preset("nano")
    assert model_flops_per_token(config, 128) > 6 * 1e6  # at least 6 × the ~1.5 M non-embedding parameters
    meter = MFUMeter(config, 128, peak=1e12)
    row = {"tokens_per_s": 1000.0}
    meter(None, None, row)
    assert row["mfu"] == pytest.approx(1000 * model_flops_per_token(config, 128) / 1e12)



def test_gpu_peaks_come_from_the_data_sheet_and_unknown_gpus_are_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_flops(torch.device("cuda")) == (989e12, "NVIDIA H100 80GB HBM3 bf16 data-sheet peak")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery GPU 9000")
    with pytest.raises(ValueError, match="Mystery GPU 9000.*pass peak="):
        peak_flops(torch.device("cuda"))


def test_live_loss_plot_keeps_the_curves():
    plot = LiveLossPlot(every=100)
    Trainer(steps=4, eval_every=2, eval_batches=1, progress=False, callbacks=[plot]).fit(
        tiny_model(), pattern_batches(), pattern_batches(1))
    figure = plot.figure
    assert list(figure.data[0].x) == [1, 2, 3, 4] and list(figure.data[2].x) == [2, 4]


def test_a_callback_class_hears_begin_every_step_and_end_and_a_plain_function_every_step():
    events = []

    class Recorder(Callback):
        def on_train_begin(self, trainer):
            events.append("begin")

        def __call__(self, trainer, model, row):
            events.append(row["step"])

        def on_train_end(self, trainer):
            events.append("end")

    steps = []
    Trainer(steps=3, eval_every=0, progress=False, callbacks=[Recorder(), lambda t, m, row: steps.append(row["step"])]).fit(
        tiny_model(), pattern_batches())
    assert events == ["begin", 1, 2, 3, "end"] and steps == [1, 2, 3]
