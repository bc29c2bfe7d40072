"""dstutor.train: loss goes down, accumulation = large batch, non-finite guard, schedules, hooks."""
import pytest
import torch

from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import NonFiniteError, Trainer, lr_multiplier


def tiny_model(seed=0, **changes):
    torch.manual_seed(seed)
    return DeepSeekLM(DeepSeekConfig.preset("nano", vocab_size=64, hidden_size=32, num_heads=2, kv_lora_rank=16,
                                            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                                            intermediate_size=48, moe_intermediate_size=16, num_layers=2, **changes))


def pattern_batches(n=4, batch=8, seq=16):
    # A learnable stream: each token is the previous + 1 (mod 64), from a random start.
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, 64, (n, batch, 1), generator=gen)
    return list((starts + torch.arange(seq)) % 64)


def test_loss_goes_down():
    history = Trainer(steps=60, lr=1e-2, warmup_steps=5, progress=False, eval_every=0).fit(
        tiny_model(), pattern_batches(), pattern_batches(2))
    assert history.loss.iloc[-5:].mean() < 0.5 * history.loss.iloc[:5].mean()
    assert history.val_loss.iloc[-1] < 1.0 and {"lr", "grad_norm", "tokens_per_s"} <= set(history.columns)


def test_accumulation_equals_the_large_batch():
    big = pattern_batches(1, batch=8)[0]
    lr = 1e-2
    common = dict(steps=1, lr=lr, warmup_steps=0, schedule="constant", progress=False, grad_clip=1.0)

    def after_one_step(batches, accumulation):
        model = tiny_model()
        Trainer(**common, accumulation=accumulation).fit(model, batches)
        return model.state_dict()

    def worst_gap(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a)

    large = after_one_step([big], 1)
    # Adam's first step is ≈ lr·sign(g), so float rounding in near-zero gradients shows up scaled by lr.
    assert worst_gap(large, after_one_step([big[:4], big[4:]], 2)) < 1e-3 * lr
    assert worst_gap(large, after_one_step([big[:4], big[:4]], 2)) > 0.5 * lr  # other data: clearly different


def test_nonfinite_loss_stops_with_the_step_named():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="step 0: loss is nan"):
        Trainer(steps=3, progress=False).fit(model, pattern_batches())


def test_nonfinite_skip_leaves_weights_untouched():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = Trainer(steps=2, progress=False, nonfinite="skip").fit(model, pattern_batches())
    assert history.skipped.tolist() == [True, True]  # logged as skipped, not silently dropped
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bias_update_hook_runs_after_each_step():
    model = tiny_model(bias_update_speed=0.01)
    Trainer(steps=3, progress=False).fit(model, pattern_batches())
    bias = model.model.layers[1].mlp.gate.e_score_correction_bias
    assert bias.abs().sum() > 0


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts", "wsd", "deepseek_v3", "constant"])
def test_schedules_warm_up_and_stay_in_range(name):
    m = lr_multiplier(name, total_steps=100, warmup_steps=10, min_ratio=0.1)
    values = [m(s) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(0.0 < v <= 1.0 for v in values)
    if name != "constant":
        assert min(values[10:]) == pytest.approx(0.1, abs=0.02)


def test_squared_warmup_cosine_is_the_guides_formula():
    import math
    m = lr_multiplier("squared_warmup_cosine", total_steps=100, warmup_steps=10)
    assert m(0) == pytest.approx(0.01) and m(4) == pytest.approx(0.25)  # ((step + 1) / warmup)²
    assert m(50) == pytest.approx(0.5)  # the cosine runs over the whole run, not from the warmup's end
    assert m(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))  # and has no floor


def test_schedule_shapes_differ_where_they_should():
    cosine, wsd = lr_multiplier("cosine", 100), lr_multiplier("wsd", 100)
    assert cosine(50) == pytest.approx(0.55) and wsd(50) == 1.0 and wsd(99) < 0.2
    restarts = lr_multiplier("cosine_restarts", 90, cycles=3)
    assert restarts(30) == pytest.approx(1.0) and restarts(29) < 0.2


@pytest.mark.parametrize("kwargs, match", [(dict(schedule="linear"), "unknown schedule"),
                                           (dict(warmup_steps=50, steps=50), "warmup_steps"),
                                           (dict(nonfinite="ignore"), "nonfinite"),
                                           (dict(precision="fp8"), "precision"),
                                           (dict(eval_batches=0), "eval_batches=0"),
                                           (dict(eval_every=-1), "eval_every=-1"),
                                           (dict(save_every=-5), "save_every=-5"),
                                           (dict(warmup_steps=-1), "warmup_steps=-1"),
                                           (dict(min_lr_ratio=1.5), "min_lr_ratio=1.5"),
                                           (dict(betas=(0.9, 1.0)), r"betas=\(0.9, 1.0\)")])
def test_bad_training_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(**kwargs)


def test_cosine_matches_transformers_after_warmup():
    # transformers warms up from 0 (a wasted first step); ours from 1/warmup. After warmup they agree.
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 10, 100, min_lr_rate=0.1).lr_lambdas[0]
    ours = lr_multiplier("cosine", 100, 10, min_ratio=0.1)
    assert [ours(s) for s in range(10, 100)] == pytest.approx([reference(s) for s in range(10, 100)], abs=1e-12)


class record_expert_loads:
    """Context manager: records each MoE layer's local expert load as the bias update receives it."""

    def __enter__(self):
        from dstutor.models.moe import DeepSeekMoE

        self.loads, self._original = [], DeepSeekMoE.update_bias
        original, loads = self._original, self.loads

        def update_bias(moe):
            loads.append(moe.pending_load.tolist())
            original(moe)

        DeepSeekMoE.update_bias = update_bias
        return self

    def __exit__(self, *exc):
        from dstutor.models.moe import DeepSeekMoE

        DeepSeekMoE.update_bias = self._original


def test_evaluation_runs_on_the_models_device_not_the_trainers():
    # A trainer set up for another device (meta stands in for a GPU here) evaluates a model left on the CPU,
    # as finetune.general_loss does after compare_methods: batches follow the model, not the trainer.
    model, batches = tiny_model(), pattern_batches(2)
    here = Trainer(progress=False, eval_batches=2, device="cpu").evaluate(model, batches)
    assert Trainer(progress=False, eval_batches=2, device="meta").evaluate(model, batches) == here


def test_the_trainer_logs_what_the_output_names_and_refuses_an_output_without_the_contract():
    from types import SimpleNamespace

    history = Trainer(steps=2, lr=1e-3, warmup_steps=0, progress=False, eval_every=0).fit(tiny_model(), pattern_batches())
    assert {"loss", "main_loss", "balance_loss", "max_load_ratio"} <= set(history.columns)
    assert (history.max_load_ratio >= 1).all()  # the busiest expert holds at least the mean load

    class Untyped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, ids, labels=None):
            loss = (self.w * ids.float().mean()) ** 2
            return SimpleNamespace(loss=loss, main_loss=loss)  # no logged()

    with pytest.raises(TypeError, match="Untyped returned a SimpleNamespace.*loss.*main_loss.*logged.*TrainOutput"):
        Trainer(steps=1, progress=False, eval_every=0).fit(Untyped(), pattern_batches(1))


def test_held_out_loss_weights_every_graded_token_once_whatever_the_batching():
    from dstutor.metrics import graded_predictions, mean_loss
    torch.manual_seed(0)
    model = tiny_model().eval()
    blocks = torch.randint(0, 64, (7, 12))
    with torch.no_grad():
        logits = model(blocks).logits[:, :-1]
        every_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), blocks[:, 1:]).item()
    # 7 blocks in batches of 3, 3, 1: a mean of batch means would give the last block a third of the weight
    assert mean_loss(model, blocks.split(3)) == pytest.approx(every_token, rel=1e-5)
    assert mean_loss(model, blocks.split(7)) == pytest.approx(every_token, rel=1e-5)
    # SFT-style labels: only the labelled next tokens count, so a batch with one graded token weighs one token
    labels = blocks.clone()
    labels[:3, :-1] = -100  # rows 0–2 grade their last token only
    with torch.no_grad():
        graded = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100).item()
    batches = [{"input_ids": blocks[:3], "labels": labels[:3]}, {"input_ids": blocks[3:], "labels": labels[3:]}]
    assert [graded_predictions(b) for b in batches] == [3, 4 * 11]
    assert mean_loss(model, batches) == pytest.approx(graded, rel=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        mean_loss(model, [])
