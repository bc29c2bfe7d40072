"""DeepSeekMoE: batched experts = per-token reference, routing rules, balancing mechanisms."""
import torch
import torch.nn.functional as F

from dstutor.models import DeepSeekConfig
from dstutor.models.moe import DeepSeekMoE, balance_loss


def moe(**changes) -> DeepSeekMoE:
    torch.manual_seed(0)
    layer = DeepSeekMoE(DeepSeekConfig.preset("nano", **changes))
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return layer


def test_batched_experts_equal_a_per_token_loop():
    layer = moe(routed_scaling_factor=2.5)
    x = torch.randn(2, 5, 128)
    out, _, load = layer(x)
    _, experts, gates = layer.gate(x.view(-1, 128))
    reference = torch.zeros(10, 128)
    for t in range(10):
        for k in range(experts.shape[1]):
            e = experts[t, k]
            gate, up = (x.view(-1, 128)[t] @ layer.experts.gate_up_proj[e].T).chunk(2)
            reference[t] += gates[t, k] * ((F.silu(gate) * up) @ layer.experts.down_proj[e].T)
    reference += layer.shared_experts(x).view(10, 128)
    assert (out.view(10, 128) - reference).abs().max() < 1e-5
    assert torch.equal(load, torch.bincount(experts.flatten(), minlength=8).float())  # the load of this routing


def test_bias_changes_selection_but_not_gate_values():
    layer = moe(norm_topk_prob=False)
    x = torch.randn(64, 128)
    scores, experts, gates = layer.gate(x)
    layer.gate.e_score_correction_bias[3] = 10.0  # force expert 3 into every token's top-K
    scores2, experts2, gates2 = layer.gate(x)
    assert (experts2 == 3).any(dim=1).all() and not (experts == 3).any(dim=1).all()
    assert torch.equal(scores, scores2)
    assert torch.allclose(gates2, scores.gather(1, experts2))  # gates are the raw affinities


def test_group_limited_routing_stays_in_topk_groups():
    layer = moe(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    x = torch.randn(200, 128)
    groups_per_token = [torch.unique(row // 4).numel() for row in layer.gate(x)[1]]
    assert max(groups_per_token) == 2
    layer.config = layer.gate.config = layer.config.replace(n_group=1, topk_group=1)
    assert max(torch.unique(row // 4).numel() for row in layer.gate(x)[1]) > 2  # unrestricted: more


def test_balance_loss_is_one_when_perfectly_uniform_and_larger_when_skewed():
    n_experts, k = 4, 2
    uniform = torch.full((1, 8, n_experts), 0.5)
    experts = torch.tensor([[[0, 1], [2, 3]] * 4])
    assert torch.isclose(balance_loss(uniform, experts, n_experts, per_sequence=True), torch.tensor(1.0))
    skewed = torch.tensor([[[0.9, 0.8, 0.1, 0.1]] * 8])
    always_01 = torch.tensor([[[0, 1]] * 8])
    assert balance_loss(skewed, always_01, n_experts, per_sequence=False) > 1.5


def test_aux_loss_free_bias_update_evens_out_a_skewed_router():
    layer = moe(bias_update_speed=0.01)
    layer.train()
    x = torch.randn(4, 64, 128, generator=torch.Generator().manual_seed(1))
    x[..., 0] = 3.0  # a feature every token shares...
    with torch.no_grad():  # ...that the router scores higher for each later expert: a skewed router
        layer.gate.weight[:, 0] = torch.linspace(-1, 1, 8)

    def imbalance():
        with torch.no_grad():
            _, _, load = layer(x)
        layer.pending_load.zero_()
        return (load.max() / load.mean()).item()

    before = imbalance()
    for _ in range(300):
        with torch.no_grad():
            layer(x)
        layer.update_bias()
    after = imbalance()
    assert before > 2.0 and after < 1.3, (before, after)
    bias = layer.gate.e_score_correction_bias
    assert bias[-1] < 0 < bias[0]  # the favoured expert was pushed down, the starved one up


def test_losses_only_when_asked():
    x = torch.randn(2, 6, 128)
    assert moe()(x)[1] == 0
    assert moe(seq_aux_alpha=1e-4)(x)[1] > 0 and moe(aux_loss_alpha=0.01, scoring_func="softmax")(x)[1] > 0
