"""MTP loss against a position-by-position reference, from_hf with MTP, top-k sampling, bf16 autocast on CPU."""
import pytest
import torch
import torch.nn.functional as F
from transformers import DeepseekV3ForCausalLM

from test_models_parity import make_model, tokens
from test_trainer import pattern_batches, tiny_model

from dstutor.models.hf import from_hf, to_hf, to_hf_config
from dstutor.train import Trainer


def test_mtp_loss_equals_a_position_by_position_reference():
    model = make_model(dict(mtp_depth=2, mtp_loss_weight=0.3))
    ids = tokens()[:, :9]
    labels = ids.clone()
    labels[0, 6] = -100  # an ignored label drops exactly the predictions that target it
    captured = {}
    model.model.norm.register_forward_hook(lambda module, inputs, out: captured.setdefault("h", inputs[0]))
    with torch.no_grad():
        out = model(ids, labels=labels)
        h, length, depth_losses = captured["h"], ids.shape[1], []
        for k, module in enumerate(model.mtp, start=1):
            # V3 §2.2: depth k at position i combines h^{k-1}_i with Emb(t_{i+k}) and predicts t_{i+k+1}
            positions = range(length - k)
            emb = model.model.embed_tokens(torch.stack([ids[:, i + k] for i in positions], dim=1))
            hk = module.eh_proj(torch.cat([module.hnorm(h[:, : length - k]), module.enorm(emb)], dim=-1))
            hk, *_ = module.block(hk, model._rope(module.block, 0, length - k, ids.device))
            logits = model.lm_head(module.norm(hk))
            terms = [F.cross_entropy(logits[b, i], labels[b, i + k + 1], reduction="sum")
                     for b in range(ids.shape[0]) for i in positions
                     if i + k + 1 < length and labels[b, i + k + 1] != -100]
            assert len(terms) == ids.shape[0] * (length - k - 1) - 1  # one target masked in each depth
            depth_losses.append(torch.stack(terms).mean())
            h = hk
    reference = torch.stack(depth_losses).mean()
    assert torch.allclose(out.mtp_loss, reference, atol=1e-6)
    assert torch.allclose(out.loss, out.main_loss + 0.3 * reference + out.balance_loss, atol=1e-6)


def test_from_hf_with_mtp_keeps_the_main_model_and_adds_trainable_mtp():
    torch.manual_seed(0)
    hf = DeepseekV3ForCausalLM._from_config(to_hf_config(make_model({}).config), attn_implementation="eager",
                                            experts_implementation="eager").eval()
    ours = from_hf(hf, mtp_depth=1).eval()
    assert len(ours.mtp) == 1
    with torch.no_grad():
        out = ours(tokens(), labels=tokens())
        assert (out.logits - hf(tokens()).logits).abs().max() < 1e-4
    assert torch.isfinite(out.mtp_loss) and out.mtp_loss > 0
    back = to_hf(ours)  # MTP modules are dropped again on the way back
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), hf.state_dict().values()))


def test_top_k_sampling_draws_only_from_the_k_most_likely():
    model = make_model({})
    prompt = tokens()[:1, :5]
    with torch.no_grad():
        top3 = set(model(prompt).logits[0, -1].topk(3).indices.tolist())
    generator = torch.Generator().manual_seed(0)
    firsts = [model.generate(prompt, 1, temperature=5.0, top_k=3, generator=generator)[0, -1].item()
              for _ in range(60)]
    assert set(firsts) == top3  # all three get drawn at a high temperature, nothing else ever does


def test_repetition_penalty_equals_transformers_and_greedy_generate():
    from transformers import RepetitionPenaltyLogitsProcessor

    from dstutor.models.model import penalise_repeats
    logits, seen = torch.randn(2, 50), torch.randint(0, 50, (2, 7))
    expected = RepetitionPenaltyLogitsProcessor(1.2)(seen, logits.clone())
    assert torch.allclose(penalise_repeats(logits, seen, 1.2), expected)
    model, prompt = make_model({}), tokens()[:1, :5]
    plain = model.generate(prompt, 12)
    assert torch.equal(model.generate(prompt, 12, repetition_penalty=1.0), plain)
    huge = model.generate(prompt, 12, repetition_penalty=1e6)[0].tolist()
    assert len(set(huge[5:])) == 12 and not set(huge[5:]) & set(huge[:5])  # nothing seen is ever chosen again
    with pytest.raises(ValueError, match="repetition_penalty > 0"):
        model.generate(prompt, 1, repetition_penalty=0.0)


def test_bf16_autocast_on_cpu_runs_in_bf16_and_trains_like_fp32():
    dtypes = []
    model = tiny_model()
    model.lm_head.register_forward_hook(lambda module, inputs, out: dtypes.append(out.dtype))
    bf16 = Trainer(steps=3, precision="bf16", device="cpu", progress=False, eval_every=0).fit(model, pattern_batches())
    fp32 = Trainer(steps=3, precision="fp32", device="cpu", progress=False, eval_every=0).fit(tiny_model(), pattern_batches())
    assert dtypes == [torch.bfloat16] * 3
    assert bf16.loss.to_numpy() == pytest.approx(fp32.loss.to_numpy(), rel=2e-2)
    assert not (bf16.loss.to_numpy() == fp32.loss.to_numpy()).all()  # it really computed in lower precision


def test_nucleus_filter_equals_transformers_top_p():
    from transformers import TopPLogitsWarper

    from dstutor.models.model import nucleus_filter
    logits = torch.randn(4, 100) * 3
    for top_p in (0.1, 0.5, 0.9):
        expected = TopPLogitsWarper(top_p)(None, logits.clone())
        assert torch.equal(torch.isinf(nucleus_filter(logits, top_p)), torch.isinf(expected))
    with pytest.raises(ValueError, match="top_p"):
        make_model({}).generate(tokens()[:1, :5], 2, temperature=1.0, top_p=0.0)


def test_generate_stops_once_every_row_has_its_end_token_and_equals_the_full_run_until_then():
    model, prompt = make_model({}), tokens()[:, :5]
    full = model.generate(prompt, 16)
    new = full[:, 5:]

    def expected_stop(eos):  # decode steps until every row has emitted eos (all 16 if one never does)
        seen = (new == eos).cumsum(dim=1).clamp(max=1).min(dim=0).values
        return int(seen.nonzero()[0]) + 1 if seen.any() else 16

    for eos in {int(new[0, 3]), int(new[1, 2]), -1}:
        early = model.generate(prompt, 16, eos_token_id=eos)
        assert torch.equal(early, full[:, :5 + expected_stop(eos)]), eos
    single = model.generate(prompt[:1], 16, eos_token_id=int(new[0, 3]))
    assert single.shape[1] <= 5 + 4 and single[0, -1] == new[0, 3]
