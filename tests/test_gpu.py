"""The CUDA paths (bf16 autocast, fused AdamW, evaluation where the model is, generation, one worker on a GPU).

Skipped without a CUDA GPU; `make gpu-check` runs them first on a machine that has one.
"""
import pytest
import torch
from test_trainer import pattern_batches, tiny_model

from dstutor.finetune import general_loss
from dstutor.train import Trainer
from dstutor.train.runner import default_workers

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")


def test_training_on_the_gpu_uses_bf16_and_fused_adamw_and_learns():
    trainer = Trainer(steps=40, lr=1e-2, warmup_steps=4, progress=False, eval_every=0, eval_batches=2)
    model = tiny_model()
    history = trainer.fit(model, pattern_batches(), pattern_batches(2))
    assert trainer.precision == "bf16" and next(model.parameters()).is_cuda
    assert trainer.make_optimizer(model).defaults["fused"]
    assert history.loss.iloc[-5:].mean() < 0.7 * history.loss.iloc[:5].mean()


def test_evaluation_follows_the_model_to_the_gpu_and_matches_the_cpu():
    model = tiny_model().eval()
    on_cpu = Trainer(progress=False, eval_batches=2, device="cpu", precision="fp32").evaluate(model, pattern_batches(2))
    on_gpu = Trainer(progress=False, eval_batches=2, device="cpu", precision="fp32").evaluate(model.cuda(),
                                                                                              pattern_batches(2))
    assert on_gpu["val_loss"] == pytest.approx(on_cpu["val_loss"], rel=1e-4)


def test_general_loss_of_a_model_on_the_gpu():
    import datasets

    rows = [seq.tolist() for batch in pattern_batches(2) for seq in batch]
    blocks = datasets.Dataset.from_dict({"input_ids": rows})
    assert general_loss(tiny_model().cuda(), blocks, batches=1, batch_size=4) > 0


def test_greedy_generation_on_the_gpu_equals_the_cpus():
    model = tiny_model().eval()
    prompt = pattern_batches(1, batch=2, seq=6)[0]
    on_cpu = model.generate(prompt, 8)
    assert torch.equal(model.cuda().generate(prompt.cuda(), 8).cpu(), on_cpu)


def test_runs_stay_in_one_process_on_a_gpu(monkeypatch):
    monkeypatch.delenv("DSTUTOR_WORKERS", raising=False)
    assert default_workers() == 1
