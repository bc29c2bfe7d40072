"""Differentially private fine-tuning: DP-SGD (Abadi et al. 2016, Alg. 1) and its Rényi-DP accountant.

Per-sample gradients come from one backward pass per example, which works for every model here,
MoE included (opacus's GradSampleModule and torch.func's vmap both refuse our MoE router). Batches
are Poisson-sampled, as the accountant assumes (Mironov, Talwar & Zhang 2019 §3.3); the (ε, δ)
conversion is Balle et al. 2020 Thm 21, as in opacus.
"""
from __future__ import annotations

import copy
import math
import re
import warnings

import numpy as np
import pandas as pd
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from scipy.special import gammaln, logsumexp
from torch import nn

from dstutor.continual.ewc import per_sample_gradients
from dstutor.env import seed_everything
from dstutor.metrics import mean_loss

# Rényi orders searched for the tightest ε (integers: the closed-form sum below is exact for them).
ORDERS = tuple(range(2, 256))


def _log_a(q: float, sigma: float, alpha: int) -> float:
    """log E[(1 + q(e^{…} − 1))^α] of the sampled Gaussian mechanism, for an integer order α."""
    k = np.arange(alpha + 1)
    log_binom = gammaln(alpha + 1) - gammaln(k + 1) - gammaln(alpha - k + 1)
    with np.errstate(divide="ignore"):
        terms = log_binom + k * math.log(q) + (alpha - k) * np.log1p(-q) + (k * k - k) / (2 * sigma ** 2)
    return float(logsumexp(terms))


def rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                orders: tuple[int, ...] = ORDERS) -> tuple[float, int]:
    """(ε, best order) after `steps` Poisson-sampled Gaussian steps with this noise multiplier and sampling rate."""
    if not 0 < sample_rate <= 1 or not 0 < delta < 1 or steps < 0:
        raise ValueError(f"need 0 < sample_rate ≤ 1, 0 < delta < 1 and steps ≥ 0; got {sample_rate}, {delta}, {steps}")
    if any(int(a) != a or a < 2 for a in orders):
        raise ValueError("this accountant's orders are integers ≥ 2")
    if noise_multiplier <= 0:
        return math.inf, 0
    alphas = np.array(orders, dtype=float)
    if sample_rate == 1:
        rdp = alphas / (2 * noise_multiplier ** 2)
    else:
        rdp = np.array([_log_a(sample_rate, noise_multiplier, int(a)) / (a - 1) for a in orders])
    eps = steps * rdp - (math.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    best = int(np.nanargmin(eps))
    return max(float(eps[best]), 0.0), int(orders[best])


def summed_gradient(model: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Σ_i g_i over the batch's examples in one backward pass: equal-length blocks make it the batch mean × its size."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not len(batch):
        return [torch.zeros_like(p) for p in params]
    found = torch.autograd.grad(model(batch, labels=batch).loss * len(batch), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]


def clipped_noisy_gradient(grads: list[list[torch.Tensor]], clip: float, noise_multiplier: float,
                           expected_batch_size: float, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Σ_i clip(g_i) + N(0, σ²C²), divided by the expected batch size (DP-SGD's gradient; opacus's, too)."""
    if clip <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
        raise ValueError(f"need clip > 0, noise_multiplier ≥ 0 and expected_batch_size > 0; got {clip}, "
                         f"{noise_multiplier}, {expected_batch_size}")
    if not grads:
        raise ValueError("no per-sample gradients")
    total = [torch.zeros_like(g) for g in grads[0]]
    for sample in grads:
        norm = torch.sqrt(sum(g.pow(2).sum() for g in sample))
        scale = torch.clamp(clip / (norm + 1e-6), max=1.0)  # opacus's factor
        for t, g in zip(total, sample):
            t.add_(g * scale)
    return [(t + noise_multiplier * clip * torch.randn(t.shape, generator=generator)) / expected_batch_size
            for t in total]


def dp_finetune(model: nn.Module, train_blocks: torch.Tensor, val_blocks: torch.Tensor, steps: int,
                sample_rate: float, clip: float | None, noise_multiplier: float, lr: float, delta: float,
                seed: int = 0) -> dict[str, float]:
    """DP-Adam on Poisson-sampled batches of train_blocks (model is changed in place): validation loss and (ε, δ).

    clip=None is the non-private reference on the same batches: Σ_i g_i unclipped and without noise, from
    one backward pass instead of one per example. The MoE router-bias update is skipped: it counts which
    experts each private example uses and is not privatised, so it would leak outside the accountant.
    """
    if clip is None and noise_multiplier:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a clipping norm: noise is scaled by clip")
    seed_everything(seed)
    # batches and noise draw from separate generators: every setting of one seed sees the same batches
    sampler, noise = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    expected = sample_rate * len(train_blocks)
    model.train()
    for _ in range(steps):
        chosen = torch.rand(len(train_blocks), generator=sampler) < sample_rate
        batch = train_blocks[chosen]
        if clip is None:
            gradient = [g / expected for g in summed_gradient(model, batch)]
        else:
            grads = per_sample_gradients(model, batch) if len(batch) else [[torch.zeros_like(p) for p in params]]
            gradient = clipped_noisy_gradient(grads, clip, noise_multiplier, expected, noise)
        for p, g in zip(params, gradient):
            p.grad = g
        optimizer.step()
    val_loss = mean_loss(model, val_blocks.split(32))
    epsilon, order = rdp_epsilon(noise_multiplier, sample_rate, steps, delta)
    return {"val_loss": val_loss, "epsilon": epsilon, "order": order}


def opacus_support(model: nn.Module) -> pd.DataFrame:
    """What opacus makes of a model (a training-mode copy): its validator's complaints and whether GradSampleModule wraps it."""
    model = copy.deepcopy(model).train()  # the validator also complains about eval mode, which is not the model's fault
    complaints = [str(error) for error in ModuleValidator.validate(model, strict=False)]
    rows = [{"check": "ModuleValidator.validate", "result": c} for c in complaints] or \
        [{"check": "ModuleValidator.validate", "result": "no complaints"}]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GradSampleModule(model)._close()
        rows.append({"check": "GradSampleModule", "result": "wraps the model: per-sample gradients available"})
    except NotImplementedError as error:
        reasons = sorted(set(re.findall(r"\((model\.[^:]+:\w+)\(\)\)", str(error))))
        rows.append({"check": "GradSampleModule", "result": f"refuses: trainable layers with buffers it does not "
                                                            f"support ({len(reasons)}: {', '.join(reasons[:2])}, …)"
                     if reasons else f"refuses: {error}"})
    return pd.DataFrame(rows)
