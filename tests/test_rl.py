"""dstutor.rl: tasks, rule rewards on hostile outputs, GRPO's pieces against their definitions, and learning."""
import copy
import dataclasses
import math
import random

import pytest
import torch

from dstutor.rl import (GRPOConfig, Problem, clipped_surrogate, evaluate_expression, extract_answer, format_reward,
                        group_advantages, grpo_loss, k3_kl, make_problems, pass_at_k, rejection_sample, rollout, score,
                        supervised, task_model, task_tokenizer, token_logprobs, total_reward, train_grpo, as_pairs)
from dstutor.rl.grpo import InformativeLevels, lr_factor
from dstutor.rl.pipeline import Recipe, cold_start, sft_then_grpo
from dstutor.rl.rewards import accuracy_reward

ADD = Problem("addition", 2, "47+85=", "132", "<think>7+5=12,4+8+1=13</think><answer>132</answer>")
COUNT = Problem("countdown", 3, "2,5,7→14=", "14", "<think>7+2=9,9+5=14</think><answer>7+2+5</answer>", (7, 2, 5))


@pytest.fixture(scope="module")
def tokenizer():
    return task_tokenizer()


def test_tokenizer_round_trips_and_keeps_tags_whole(tokenizer):
    text = ADD.prompt + ADD.solution
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) == len(text) - sum(len(t) - 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))


def test_problems_are_deterministic_distinct_and_held_out():
    train, test = make_problems("addition", (1, 2, 3), 200, 40, seed=3)
    again, _ = make_problems("addition", (1, 2, 3), 200, 40, seed=3)
    assert train == again and len({p.prompt for p in train + test}) == 240
    assert sorted(p.level for p in test) == [1] * 14 + [2] * 13 + [3] * 13
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert {p.level for p in test} == {1, 2, 3}
    for p in train[:50]:
        a, b = map(int, p.prompt[:-1].split("+"))
        assert p.target == str(a + b) and accuracy_reward(p.solution, p) == 1.0
    for p in make_problems("countdown", (3, 4), 100, 10, seed=1)[0]:
        assert accuracy_reward(p.solution, p) == 1.0 and int(p.target) > 0


@pytest.mark.parametrize("completion, answer", [
    ("<think>x</think><answer>132</answer>", "132"),
    ("  <think>x</think><answer> 132 </answer>\n", "132"),
    ("", None),                                                       # empty
    ("<think>7+5=12", None),                                          # truncated
    ("<think>x</think><answer>132", None),                            # answer tag never closed
    ("132", None),                                                    # answer outside the tags
    ("<think>x</think>132", None),
    ("<answer>132</answer>", None),                                   # no think block
    ("<think>x</think><answer>1</answer><answer>132</answer>", None),  # several answer tags
    ("<think>x</think><answer>132</answer>132", None),                # text after the answer
    ("<think><answer>132</answer></think><answer>132</answer>", None),  # answer hidden in the thinking
])
def test_format_is_strict(completion, answer):
    assert extract_answer(completion) == answer
    assert format_reward(completion) == float(answer is not None)


def test_rewards_score_correctness_and_format():
    assert total_reward(ADD.solution, ADD) == pytest.approx(1.1)
    assert total_reward("<think>x</think><answer>131</answer>", ADD) == pytest.approx(0.1)
    assert total_reward("132", ADD) == 0.0
    assert total_reward("<think>x</think><answer>0132x</answer>", ADD) == pytest.approx(0.1)
    assert accuracy_reward("<think></think><answer>(7+5)+2</answer>", COUNT) == 1.0
    for wrong in ("7*2", "7+7", "7+2+5+0", "14", "7+2+5-0*5", "__import__('os')", "7**2", "(7+2", "-7+2+19"):
        assert accuracy_reward(f"<think></think><answer>{wrong}</answer>", COUNT) == 0.0, wrong


def test_expression_evaluator_refuses_everything_but_arithmetic():
    assert evaluate_expression("(2+5+6)*7") == (91, [2, 5, 6, 7])
    for bad in ("os.system('x')", "2**8", "1.5+1", "7/0", "[1]", "1+"):
        with pytest.raises(ValueError):
            evaluate_expression(bad)


def test_advantages_sum_to_zero_per_group_and_vanish_for_a_degenerate_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.1], [0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0]])
    adv = group_advantages(rewards)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.equal(adv[1], torch.zeros(4))
    assert adv[2, 3] > 0 > adv[2, 0] and adv[0].std().item() == pytest.approx(1.0, abs=1e-3)


def test_clipping_bounds_the_ratio():
    old = torch.zeros(5)
    logp = torch.log(torch.tensor([0.5, 0.9, 1.0, 1.1, 3.0]))
    up, down = clipped_surrogate(logp, old, torch.ones(5), 0.2), clipped_surrogate(logp, old, -torch.ones(5), 0.2)
    assert torch.allclose(up, torch.tensor([0.5, 0.9, 1.0, 1.1, 1.2]))       # A > 0: no gain beyond 1 + ε
    assert torch.allclose(down, -torch.tensor([0.8, 0.9, 1.0, 1.1, 3.0]))    # A < 0: no gain below 1 − ε
    logp.requires_grad_(True)
    clipped_surrogate(logp, old, torch.ones(5), 0.2).sum().backward()
    assert logp.grad[-1] == 0 and logp.grad[2] == 1  # a clipped token gets no gradient


def test_k3_kl_is_zero_for_equal_policies_and_positive_otherwise():
    logp = torch.log(torch.rand(4, 6).clamp(min=0.01))
    assert torch.equal(k3_kl(logp, logp), torch.zeros(4, 6))
    assert (k3_kl(logp, logp - 0.3) > 0).all()
    mask, adv = torch.ones(4, 6), torch.zeros(4)
    _, stats = grpo_loss(logp, logp, logp, adv, mask, 0.2, 0.04)
    assert stats["kl"] == 0.0


def test_rollout_masks_after_eos_and_logprobs_match_generation(tokenizer):
    model = task_model(tokenizer, "nano", seed=0)
    samples = rollout(model, tokenizer, [ADD, COUNT], 3, 12, 1.0, torch.Generator().manual_seed(0))
    assert samples.sequences.shape[0] == 6 and samples.mask.shape == (6, samples.sequences.shape[1] - 1)
    assert (samples.lengths >= 1).all() and (samples.lengths <= 12).all()
    row = samples.sequences[0].tolist()
    first = len(tokenizer(ADD.prompt)["input_ids"])
    assert samples.mask[0, : first - 1].sum() == 0 and samples.mask[0, first - 1] == 1
    assert samples.texts[0] == tokenizer.decode(row[first: first + int(samples.lengths[0])]).replace("<eos>", "")
    greedy = rollout(model, tokenizer, [ADD], 2, 8, 0.0)
    assert greedy.texts[0] == greedy.texts[1]
    logp = token_logprobs(model.eval(), samples.sequences)
    assert logp.shape == samples.mask.shape and (logp <= 0).all()


def test_pass_at_k_matches_its_definition():
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 8, 8) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    with pytest.raises(ValueError, match="correct"):
        pass_at_k(4, 5, 1)


def test_bad_inputs_are_refused_clearly(tokenizer):
    model = task_model(tokenizer, "nano")
    with pytest.raises(ValueError, match="group_size"):
        train_grpo(model, tokenizer, [ADD], total_reward, GRPOConfig(group_size=1))
    with pytest.raises(ValueError, match="prompt set is empty"):
        train_grpo(model, tokenizer, [], total_reward, GRPOConfig(steps=1))
    with pytest.raises(TypeError, match="finite number.*'yes'"):
        train_grpo(model, tokenizer, [ADD], lambda text, p: "yes", GRPOConfig(steps=1, group_size=2, progress=False))
    with pytest.raises(TypeError, match="finite number"):
        score(rollout(model, tokenizer, [ADD], 2, 4, 1.0), lambda text, p: float("nan"))
    with pytest.raises(ValueError, match="unknown task"):
        make_problems("sudoku", (1,), 1, 1)
    with pytest.raises(ValueError, match="only 100 distinct addition problems at level 1"):
        make_problems("addition", (1,), 200, 10)  # only 100 one-digit sums exist


def test_grpo_update_moves_probability_toward_high_reward_samples(tokenizer):
    torch.manual_seed(0)
    model = task_model(tokenizer, "nano").eval()
    samples = rollout(model, tokenizer, [ADD], 4, 6, 1.0, torch.Generator().manual_seed(1))
    advantages = torch.tensor([1.5, -0.5, -0.5, -0.5])
    before = (token_logprobs(model, samples.sequences) * samples.mask).sum(1)
    logp = token_logprobs(model.train(), samples.sequences)
    loss, _ = grpo_loss(logp, logp.detach(), None, advantages, samples.mask, 0.2, 0.0)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
    after = (token_logprobs(model.eval(), samples.sequences) * samples.mask).sum(1)
    assert after[0] > before[0] and (after[1:] < before[1:]).all()


def test_grpo_raises_accuracy_on_a_learnable_task(tokenizer):
    train, test = make_problems("addition", (1,), 90, 10, seed=0)
    policy = task_model(tokenizer, "nano", seed=0)
    supervised(policy, tokenizer, as_pairs(train), steps=80, lr=1e-2, seed=0)
    start = copy.deepcopy(policy)
    config = GRPOConfig(steps=60, prompts_per_step=16, group_size=16, lr=3e-4, max_new_tokens=24, progress=False)
    history = train_grpo(policy, tokenizer, train, total_reward, config)
    assert {"reward", "accuracy", "length", "kl", "degenerate", "clip_fraction"} <= set(history.columns)
    assert history.kl.iloc[0] == pytest.approx(0.0, abs=1e-6) and history.kl.iloc[-1] > 0

    def accuracy(model):
        return score(rollout(model, tokenizer, train, 16, 24, 1.0, torch.Generator().manual_seed(5)),
                     accuracy_reward).mean().item()

    assert 0.05 < accuracy(start) < 0.95
    assert accuracy(policy) > accuracy(start) + 0.04


def test_rejection_sampling_keeps_only_correct_distinct_replies(tokenizer):
    train, _ = make_problems("addition", (1,), 40, 1, seed=0)
    policy = task_model(tokenizer, "nano", seed=0)
    supervised(policy, tokenizer, as_pairs(train), steps=80, lr=1e-2, seed=0)
    kept = rejection_sample(policy, tokenizer, train[:20], samples=4, max_new_tokens=24)
    problems = {p.prompt: p for p in train}
    assert len(kept) > 0 and not kept.duplicated().any()
    assert all(accuracy_reward(a, problems[p]) == 1.0 for p, a in zip(kept.prompt, kept.answer))


def test_one_update_per_batch_needs_no_pass_of_the_sampling_policy(tokenizer):
    model = task_model(tokenizer, "nano", seed=0)
    samples = rollout(model, tokenizer, [ADD, COUNT], 3, 8, 1.0, torch.Generator().manual_seed(0))
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.2, 0.3, -0.5])
    with torch.no_grad():
        sampled_by = token_logprobs(model.eval(), samples.sequences)
    grads = []
    for old in (sampled_by, None):  # a separate pass of the sampling policy, or the update's own forward detached
        model.zero_grad()
        logp = token_logprobs(model.train(), samples.sequences)
        loss, _ = grpo_loss(logp, logp.detach() if old is None else old, None, advantages, samples.mask, 0.2, 0.0)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads))


def test_cold_start_is_built_once_and_loaded_unchanged(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("DSTUTOR_CACHE", str(tmp_path))  # an empty cache: the first call builds, whatever ran before
    train, _ = make_problems("addition", (1,), 40, 1, seed=0)
    recipe = Recipe(size="nano", sft_steps=12, sft_lr=1e-2)
    reference = task_model(tokenizer, "nano", seed=3)
    supervised(reference, tokenizer, as_pairs(train), 12, lr=1e-2, seed=3)
    built, loaded = cold_start(recipe, tokenizer, train, seed=3), cold_start(recipe, tokenizer, train, seed=3)
    for model in (built, loaded):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    other = cold_start(recipe, tokenizer, train[:39], seed=3)  # other data: another artefact
    assert any(not torch.equal(a, b) for a, b in zip(other.state_dict().values(), reference.state_dict().values()))
    first_39 = cold_start(dataclasses.replace(recipe, sft_examples=39), tokenizer, train, seed=3)  # the same 39 solutions
    assert all(torch.equal(a, b) for a, b in zip(first_39.state_dict().values(), other.state_dict().values()))
    for bad in (0, 41):
        with pytest.raises(ValueError, match=f"sft_examples={bad}: need 1 ≤ sft_examples ≤ 40"):
            cold_start(dataclasses.replace(recipe, sft_examples=bad), tokenizer, train, seed=3)


def test_a_snapshot_of_a_longer_run_is_the_shorter_run(tokenizer):
    train, test = make_problems("addition", (1,), 40, 4, seed=0)
    config = GRPOConfig(steps=4, prompts_per_step=4, group_size=4, max_new_tokens=12, warmup_steps=1, lr=1e-3,
                        progress=False)
    recipe = Recipe(size="nano", sft_steps=20, sft_lr=1e-2, grpo=config, eval_samples=2, eval_tokens=12)
    runs = sft_then_grpo(recipe, tokenizer, train, test, [0], snapshot_step=2, stages=["after GRPO"])
    assert list(runs.scores.stage) == ["after GRPO"] and len(runs.histories) == 4
    short = copy.deepcopy(runs.starts[0])
    history = train_grpo(short, tokenizer, train, total_reward, dataclasses.replace(config, steps=2))
    assert all(torch.equal(a, b) for a, b in zip(short.state_dict().values(), runs.snapshots[0].state_dict().values()))
    logged = ["reward", "accuracy", "length", "degenerate", "loss", "kl"]
    assert history[logged].equals(runs.histories[logged].head(2))
    with pytest.raises(ValueError, match="snapshot_step=5"):
        sft_then_grpo(recipe, tokenizer, train, test, [0], snapshot_step=5)
    with pytest.raises(ValueError, match="unknown stages"):
        sft_then_grpo(recipe, tokenizer, train, test, [0], stages=["after RL"])
    decaying = dataclasses.replace(recipe, grpo=dataclasses.replace(config, min_lr_ratio=0.5))
    with pytest.raises(ValueError, match="constant learning rate: min_lr_ratio=0.5"):
        sft_then_grpo(decaying, tokenizer, train, test, [0], snapshot_step=2)


def test_learning_rate_warms_up_then_decays_by_a_cosine_to_its_floor():
    config = GRPOConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(i, config) for i in range(120)]
    assert factors[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])
    assert factors[10] == 1.0 and factors[60] == pytest.approx(0.55) and factors[110:] == pytest.approx([0.1] * 10)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    constant = dataclasses.replace(config, min_lr_ratio=1.0)
    assert [lr_factor(i, constant) for i in range(10, 120)] == [1.0] * 110
    with pytest.raises(ValueError, match="min_lr_ratio=1.5"):
        dataclasses.replace(config, min_lr_ratio=1.5).validate()


def test_dropping_degenerate_groups_updates_on_the_informative_ones_only(tokenizer):
    train, _ = make_problems("addition", (1,), 40, 1, seed=0)
    config = GRPOConfig(steps=1, prompts_per_step=4, group_size=4, max_new_tokens=8, beta=0.0, warmup_steps=0,
                        lr=1e-3, progress=False)
    untrained = task_model(tokenizer, "nano", seed=0)  # it never answers: every group is degenerate
    for drop in (False, True):
        model = copy.deepcopy(untrained)
        history = train_grpo(model, tokenizer, train, total_reward, dataclasses.replace(config, drop_degenerate=drop))
        assert history.degenerate.iloc[0] == 1.0
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), untrained.state_dict().values()))
        assert ("loss" in history) != drop  # dropped: no update is computed at all
    samples = rollout(untrained, tokenizer, [ADD, COUNT], 3, 6, 1.0, torch.Generator().manual_seed(0))
    kept = samples.subset(torch.tensor([False, False, False, True, True, True]))
    assert kept.texts == samples.texts[3:] and kept.problems == samples.problems[3:] and kept.group_size == 3
    assert torch.equal(kept.sequences, samples.sequences[3:]) and torch.equal(kept.mask, samples.mask[3:])


def test_informative_sampling_draws_the_levels_whose_groups_can_still_disagree(tokenizer):
    train, _ = make_problems("addition", (1, 2, 3), 90, 3, seed=0)
    levels = InformativeLevels(train, group_size=8, rng=random.Random(0))
    assert levels.weights() == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})  # no evidence yet
    for _ in range(60):  # level 1 always solved, level 2 half the time, level 3 never
        batch = levels.draw(30)
        correct = torch.tensor([[float(p.level == 1 or (p.level == 2 and g % 2 == 0)) for g in range(8)] for p in batch])
        levels.observe(batch, correct)
    weights = levels.weights()
    assert levels.accuracy[1] > 0.99 and levels.accuracy[3] < 0.01 and levels.accuracy[2] == pytest.approx(0.5, abs=0.01)
    assert weights[2] > 0.85 and min(weights[1], weights[3]) >= 0.05  # the floor keeps them measured
    drawn = levels.draw(60)  # more of level 2 than it holds: all 30 of them, none twice
    assert sum(p.level == 2 for p in drawn) == 30 and len({id(p) for p in drawn}) == len(drawn)
    config = GRPOConfig(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=8, warmup_steps=0, progress=False,
                        sampling="informative")
    history = train_grpo(task_model(tokenizer, "nano", seed=0), tokenizer, train, total_reward, config)
    assert {"share level 1", "share level 2", "share level 3"} <= set(history.columns)
    with pytest.raises(ValueError, match="GRPOConfig.sampling='hardest'"):
        dataclasses.replace(config, sampling="hardest").validate()
