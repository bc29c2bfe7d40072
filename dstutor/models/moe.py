"""DeepSeekMoE: shared + fine-grained routed experts with DeepSeek-V3's router and load balancing.

V3 §2.1.2: sigmoid affinities; a per-expert bias chooses experts (never weights them) and moves by
±γ after each step against the observed load (aux-loss-free balancing); a tiny sequence-wise
balance loss α. The classic batch-level auxiliary loss (DeepSeekMoE §4, V2) is here for comparison.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dstutor.models.config import DeepSeekConfig
from dstutor.models.layers import SwiGLU


class Router(nn.Module):
    """Scores every expert for every token and picks the top-K (group-limited, V3 §2.1.2 eq. 12–16)."""

    def __init__(self, config: DeepSeekConfig):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))
        # Aux-loss-free balancing bias: added to the scores only to *select* experts. Not trained by
        # gradients; moved by `DeepSeekMoE.update_bias`.
        self.register_buffer("e_score_correction_bias", torch.zeros(config.n_routed_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (tokens, hidden) → affinities (tokens, E), chosen experts and their gates (tokens, K)."""
        cfg = self.config
        logits = F.linear(x.float(), self.weight.float())  # routing in fp32 even under bf16
        scores = logits.sigmoid() if cfg.scoring_func == "sigmoid" else logits.softmax(dim=-1)
        choice = scores + self.e_score_correction_bias
        if cfg.n_group > 1:  # keep the topk_group groups whose two best experts score highest
            grouped = choice.view(-1, cfg.n_group, cfg.n_routed_experts // cfg.n_group)
            best_groups = grouped.topk(2, dim=-1).values.sum(-1).topk(cfg.topk_group, dim=-1).indices
            keep = torch.zeros_like(grouped[..., 0], dtype=torch.bool).scatter_(1, best_groups, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view_as(choice)
        experts = choice.topk(cfg.num_experts_per_tok, dim=-1, sorted=False).indices
        gates = scores.gather(1, experts)
        if cfg.norm_topk_prob:
            gates = gates / (gates.sum(dim=-1, keepdim=True) + 1e-20)
        return scores, experts, gates * cfg.routed_scaling_factor


class Experts(nn.Module):
    """All routed experts as two 3-D weights; tokens are sorted by expert and run as one matmul each."""

    def __init__(self, config: DeepSeekConfig):
        super().__init__()
        n, hidden, inner = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(n, 2 * inner, hidden))
        self.down_proj = nn.Parameter(torch.empty(n, hidden, inner))

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """x (tokens, hidden), experts/gates (tokens, K) → Σ_k gate_k · expert_k(x)."""
        flat = experts.flatten()
        order = flat.argsort(stable=True)
        token_of_slot = order // experts.shape[1]
        counts = torch.bincount(flat, minlength=self.gate_up_proj.shape[0]).tolist()
        outputs = []
        for e, chunk in enumerate(x[token_of_slot].split(counts)):
            if counts[e]:
                gate, up = (chunk @ self.gate_up_proj[e].T).chunk(2, dim=-1)
                outputs.append((F.silu(gate) * up) @ self.down_proj[e].T)
        weighted = torch.cat(outputs) * gates.flatten()[order, None]
        return torch.zeros_like(x, dtype=weighted.dtype).index_add_(0, token_of_slot, weighted).to(x.dtype)


def balance_loss(affinity: torch.Tensor, experts: torch.Tensor, n_experts: int,
                 per_sequence: bool) -> torch.Tensor:
    """Σ_i f_i·P_i: f_i = load share of expert i (×E/K), P_i = its mean normalised affinity.

    affinity (batch, seq, E), experts (batch, seq, K). `per_sequence=True` is V3's sequence-wise loss
    (eq. 17–20), averaged over sequences; False is the classic loss over the whole batch.
    """
    probs = affinity / affinity.sum(dim=-1, keepdim=True)
    chosen = F.one_hot(experts, n_experts).sum(dim=-2).float()  # (batch, seq, E) 0/1
    dims = (1,) if per_sequence else (0, 1)
    f = chosen.mean(dim=dims) * n_experts / experts.shape[-1]
    p = probs.mean(dim=dims)
    return (f * p).sum(dim=-1).mean()


class DeepSeekMoE(nn.Module):
    """Shared experts (always on) + routed experts (top-K per token); returns output, loss and load."""

    def __init__(self, config: DeepSeekConfig):
        super().__init__()
        self.config = config
        self.gate = Router(config)
        self.experts = Experts(config)
        shared = config.moe_intermediate_size * config.n_shared_experts
        self.shared_experts = SwiGLU(config.hidden_size, shared) if shared else None
        self.register_buffer("pending_load", torch.zeros(config.n_routed_experts), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (batch, seq, hidden) → (output, balance loss, tokens per expert)."""
        cfg = self.config
        affinity, experts, gates = self.gate(x.reshape(-1, x.shape[-1]))
        out = self.experts(x.reshape(-1, x.shape[-1]), experts, gates).view_as(x)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        load = torch.bincount(experts.flatten(), minlength=cfg.n_routed_experts).float()
        loss = x.new_zeros((), dtype=torch.float32)
        if cfg.seq_aux_alpha or cfg.aux_loss_alpha:
            affinity = affinity.view(*x.shape[:2], -1)
            experts = experts.view(*x.shape[:2], -1)
            if cfg.seq_aux_alpha:
                loss = loss + cfg.seq_aux_alpha * balance_loss(affinity, experts, cfg.n_routed_experts, True)
            if cfg.aux_loss_alpha:
                loss = loss + cfg.aux_loss_alpha * balance_loss(affinity, experts, cfg.n_routed_experts, False)
        if self.training:
            self.pending_load += load
        return out, loss, load

    @torch.no_grad()
    def update_bias(self) -> None:
        """Aux-loss-free step: raise the bias of under-loaded experts by γ, lower over-loaded ones."""
        gamma = self.config.bias_update_speed
        if gamma and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.pending_load)  # the global load, so every rank moves the same way
        if gamma and self.pending_load.sum() > 0:
            error = self.pending_load.mean() - self.pending_load
            self.gate.e_score_correction_bias += gamma * error.sign()
        self.pending_load.zero_()


@torch.no_grad()
def routed_gates(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """For the first sequence, each MoE layer's gates as a dense (tokens, experts) matrix (0: not routed)."""
    captured = []

    def keep(router, inputs, output):
        scores, experts, gates = output
        captured.append(torch.zeros_like(scores).scatter_(1, experts, gates))

    routers = [m.gate for m in model.model.layers.modules() if isinstance(m, DeepSeekMoE)]
    handles = [router.register_forward_hook(keep) for router in routers]
    try:
        model(input_ids[:1])
    finally:
        for handle in handles:
            handle.remove()
    return captured
