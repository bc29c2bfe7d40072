"""dstutor.continual: metrics on hand-computed matrices, replay sampling, freezing, EWC, rollback, drift,
curriculum order, DP-SGD clipping and its accountant against opacus, and the errors the issue names."""
import copy
import warnings

import numpy as np
import pytest
import torch

from dstutor.continual.curriculum import ordered_batches, unigram_difficulty
from dstutor.continual.ewc import Consolidated, EWCModel, fisher_diagonal
from dstutor.continual.metrics import (backward_transfer, final_loss, forgetting, forgetting_rate, forward_transfer,
                                       steps_to_target)
from dstutor.continual.online import (DriftDetector, Snapshots, detection_report, online_learning,
                                      token_distribution)
from dstutor.continual.privacy import (clipped_noisy_gradient, dp_finetune, opacus_support, per_sample_gradients,
                                       rdp_epsilon, summed_gradient)
from dstutor.continual.replay import ReplayBuffer, rank_probabilities
from dstutor.continual.strategies import Strategy, compare_strategies, freeze_for_stage, run_sequence
from dstutor.continual.tasks import Task, ciphered, task_sequence
from dstutor.train import TrainConfig, Trainer
from tiny import tiny_lm as tiny

# rows: before, after task a, after task b, after task c; columns: tasks a, b, c (losses)
R = np.array([[5.0, 6.0, 7.0],
              [3.0, 6.5, 7.2],
              [3.6, 4.0, 7.5],
              [4.2, 4.4, 5.0]])


def tiny_lm(seed=0, **changes):
    return tiny(seed, vocab_size=64, **changes)


def pattern_task(name, low, high, seed):
    """Blocks cycling through the token ids low…high−1 from random offsets: easy to learn, distinct per task."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, high - low, (48, 1), generator=generator)
    blocks = low + (starts + torch.arange(16)) % (high - low)
    return Task(name, blocks[:40], blocks[40:])


def test_held_out_documents_are_those_the_pretrained_base_never_saw():
    import inspect

    from dstutor import zoo
    from dstutor.continual import tasks

    assert tasks.HELD_OUT == inspect.signature(zoo.course_blocks).parameters["val_fraction"].default


def test_metrics_on_a_hand_computed_matrix():
    assert final_loss(R) == pytest.approx((4.2 + 4.4 + 5.0) / 3)
    # a: final 4.2 vs best after learning it (min of 3.0, 3.6) = 1.2; b: 4.4 − 4.0 = 0.4
    assert forgetting(R) == pytest.approx((1.2 + 0.4) / 2)
    assert backward_transfer(R) == pytest.approx(((3.0 - 4.2) + (4.0 - 4.4)) / 2)
    # b: 6.0 before anything vs 6.5 just before its stage; c: 7.0 vs 7.5
    assert forward_transfer(R) == pytest.approx(((6.0 - 6.5) + (7.0 - 7.5)) / 2)
    assert forgetting_rate(R) == pytest.approx((1.2 / 3.0 + 0.4 / 4.0) / 2)
    with pytest.raises(ValueError, match="T \\+ 1 rows"):
        forgetting(R[1:])


def test_rank_priorities_match_hand_values_and_alpha_zero_is_uniform():
    # scores 0.1, 0.5, 0.3 → ranks 3, 1, 2 → weights 1/3, 1, 1/2 over 11/6
    assert rank_probabilities([0.1, 0.5, 0.3], 1.0) == pytest.approx([2 / 11, 6 / 11, 3 / 11])
    assert rank_probabilities([0.1, 0.5, 0.3], 0.0) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="alpha=-0.5"):
        rank_probabilities([1.0, 2.0], -0.5)


def test_replay_buffer_keeps_equal_shares_and_samples_by_priority():
    buffer = ReplayBuffer(capacity=10, seed=0)
    buffer.add("a", torch.zeros(30, 4, dtype=torch.long))
    assert len(buffer) == 10
    buffer.add("b", torch.ones(30, 4, dtype=torch.long))
    assert [len(v) for v in buffer.by_task.values()] == [5, 5]
    priorities = np.r_[np.zeros(5), np.ones(5)]  # task b's blocks are the hard ones
    drawn = buffer.sample(4000, priorities, alpha=2.0)
    p_b = rank_probabilities(priorities, 2.0)[5:].sum()
    assert drawn[:, 0].float().mean().item() == pytest.approx(p_b, abs=0.03)
    with pytest.raises(ValueError, match="capacity=-1"):
        ReplayBuffer(-1)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4).sample(2)


def test_bad_strategies_and_task_lists_raise_clear_errors():
    with pytest.raises(ValueError, match="replay_size=-3"):
        Strategy(replay_size=-3).validate()
    with pytest.raises(ValueError, match="replay_alpha=-1"):
        Strategy(replay_alpha=-1.0).validate()
    with pytest.raises(ValueError, match="freeze='sideways'"):
        Strategy(freeze="sideways").validate()
    with pytest.raises(ValueError, match="empty"):
        task_sequence([], tokenizer=None, block_size=8, n_train=1, n_test=1)
    with pytest.raises(ValueError, match="no tasks"):
        run_sequence(tiny_lm(), [], Strategy(), steps=1, batch_size=2)
    wide = Task("wide", torch.full((4, 8), 100), torch.full((2, 8), 100))
    with pytest.raises(ValueError, match="token id 100 .* vocabulary has 64"):
        run_sequence(tiny_lm(), [wide], Strategy(), steps=1, batch_size=2)


def test_sequential_training_learns_each_task_and_forgets_the_first():
    tasks = [pattern_task("low", 0, 32, 0), pattern_task("high", 32, 64, 1)]
    losses, history = run_sequence(tiny_lm(), tasks, Strategy(lr=3e-3), steps=40, batch_size=8)
    assert losses.shape == (3, 2) and list(losses.columns) == ["low", "high"]
    assert losses.loc["after low", "low"] < losses.loc["before", "low"] - 0.5
    assert losses.loc["after high", "high"] < losses.loc["after low", "high"] - 0.5
    assert forgetting(losses) > 0.1  # learning the second task undid part of the first
    assert set(history.stage) == {1, 2}
    replayed, _ = run_sequence(tiny_lm(), tasks, Strategy(lr=3e-3, replay_size=40, replay_share=0.5), steps=40, batch_size=8)
    assert forgetting(replayed) < forgetting(losses)
    adapters, _ = run_sequence(tiny_lm(), tasks, Strategy(lr=1e-2, lora_rank=4), steps=20, batch_size=8)
    assert forgetting(adapters) == 0.0  # each task is scored with its own adapter over an untouched base


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, as the runner's workers train: float sums then agree to the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_shared_first_stage_gives_the_same_runs_as_training_it_again(one_thread):
    tasks = [pattern_task("low", 0, 32, 0), pattern_task("high", 32, 64, 1)]
    base = tiny_lm()
    strategies = [Strategy("naive", lr=3e-3), Strategy("replay", lr=3e-3, replay_size=20, replay_alpha=1.0),
                  Strategy("EWC", lr=3e-3, ewc_strength=100.0), Strategy("by task", lr=3e-3, freeze="by_task"),
                  Strategy("LoRA", lr=1e-2, lora_rank=2)]  # its adapters' initialisation follows the seed alone
    runs, means, sequences = compare_strategies(base, tasks, strategies, seeds=[0, 1], steps=6, batch_size=4)
    for strategy in strategies:
        for seed in (0, 1):
            alone, history = run_sequence(base, tasks, strategy, steps=6, batch_size=4, seed=seed)
            shared, shared_history = sequences[strategy.name, seed]
            assert shared.equals(alone), strategy.name  # bit for bit: the reused stage is the stage it would train
            assert shared_history.loss.equals(history.loss)
    # naive and replay share stage 1 and its time (EWC adds its Fisher); freezing by task trains its own
    assert sequences["naive", 0][1].stage_seconds.iloc[0] == sequences["replay", 0][1].stage_seconds.iloc[0]
    assert sequences["naive", 0][1].stage_seconds.iloc[0] != sequences["by task", 0][1].stage_seconds.iloc[0]
    assert list(runs.strategy) == [s.name for s in strategies for _ in (0, 1)] and (runs.seconds > 0).all()
    assert not sequences["LoRA", 0][0].equals(sequences["LoRA", 1][0])
    assert means["naive"].equals((sequences["naive", 0][0] + sequences["naive", 1][0]) / 2)
    with pytest.raises(ValueError, match="unique.*'naive', 'naive'"):
        compare_strategies(base, tasks, [Strategy("naive"), Strategy("naive")], [0], 1, 2)


def test_freezing_by_task_leaves_frozen_weights_bit_identical():
    model = tiny_lm()
    freeze_for_stage(model, Strategy(freeze="by_task"), stage=0, stages=3)  # layer group 0 of [0], [1], [2]
    before = copy.deepcopy(model.state_dict())
    blocks = pattern_task("t", 0, 32, 0).train
    Trainer(TrainConfig(steps=3, lr=1e-2, progress=False, device="cpu")).fit(model, list(blocks.split(8)))
    after = model.state_dict()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("model.layers.0.") for n in frozen)
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["model.layers.1.self_attn.o_proj.weight"], after["model.layers.1.self_attn.o_proj.weight"])
    freeze_for_stage(model, Strategy(freeze="by_task"), stage=2, stages=3)  # the next stage unfreezes group 0
    assert {n.split(".")[2] for n, p in model.named_parameters() if not p.requires_grad} == {"2"}


def test_fisher_is_the_mean_of_per_example_squared_gradients():
    model = tiny_lm()
    blocks = pattern_task("t", 0, 8, 0).train[:6]
    expected = {}
    for ids in blocks:
        model.zero_grad()
        model(ids[None], labels=ids[None]).loss.backward()
        for name, p in model.named_parameters():
            expected[name] = expected.get(name, 0) + (p.grad if p.grad is not None else torch.zeros_like(p)) ** 2 / 6
    fisher = fisher_diagonal(model, list(blocks.split(4)))  # batches of 4 and 2: the batching must not matter
    assert all(torch.allclose(fisher[name], expected[name], rtol=1e-4, atol=1e-12) for name in fisher)
    model.zero_grad()
    model(blocks, labels=blocks).loss.backward()  # the old estimate: the batch-mean gradient, squared
    squared_mean = sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)
    assert sum(f.sum() for f in fisher.values()) > squared_mean  # Jensen: E[g²] ≥ (E g)², equal only if all g agree
    with pytest.raises(ValueError, match="at least one example"):
        fisher_diagonal(model, [])


def test_ewc_penalty_is_zero_at_the_anchor_and_holds_weights_back():
    model = tiny_lm()
    blocks = pattern_task("t", 0, 32, 0).train
    fisher = fisher_diagonal(model, list(blocks.split(8)))
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    memory = Consolidated({}, {}).update(model, fisher)
    assert EWCModel(model, memory, 100.0).penalty().item() == 0.0
    other = pattern_task("u", 32, 64, 1).train

    def drift(strength):
        trained = copy.deepcopy(model)
        wrapped = EWCModel(trained, memory, strength)
        Trainer(TrainConfig(steps=10, lr=1e-2, progress=False, device="cpu")).fit(wrapped, list(other.split(8)))
        return sum(((p - memory.anchors[n]) ** 2 * memory.fisher[n]).sum().item() for n, p in trained.named_parameters())

    assert drift(1e4) < drift(0.0) / 2
    with pytest.raises(ValueError, match="strength=-1"):
        EWCModel(model, memory, -1.0)


def test_rollback_restores_identical_weights_and_a_poisoned_batch_is_rolled_back():
    model = tiny_lm()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    snapshots = Snapshots(model, 1.0, optimizer)
    before = copy.deepcopy(model.state_dict())
    ids = pattern_task("t", 0, 32, 0).train[:8]
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    snapshots.rollback(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {}  # the optimiser's moments are rolled back, too

    task = pattern_task("t", 0, 32, 0)
    noise = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    stream = list(task.train.split(8)) * 3 + [noise] * 3

    def validate(m):
        with torch.no_grad():
            return m(task.test, labels=task.test).main_loss.item()

    guarded = online_learning(tiny_lm(), stream, validate, lr=1e-2, tolerance=0.02)
    unguarded = online_learning(tiny_lm(), stream, validate, lr=1e-2, tolerance=None)
    assert guarded.rolled_back.iloc[-3:].any() and not unguarded.rolled_back.any()
    assert guarded.val_loss.iloc[-1] < unguarded.val_loss.iloc[-1]


def test_drift_detector_fires_on_a_switch_and_not_on_a_stationary_stream():
    generator = np.random.default_rng(0)
    vocab = 50
    a, b = generator.dirichlet(np.ones(vocab)), generator.dirichlet(np.ones(vocab))

    def windows(p, n):
        return [torch.from_numpy(generator.choice(vocab, 400, p=p)) for _ in range(n)]

    detector = DriftDetector(vocab, quantile=0.99).fit(torch.from_numpy(generator.choice(vocab, 20_000, p=a)), windows(a, 100))
    stationary = detector.alarms(windows(a, 40))
    switching = detector.alarms(windows(a, 20) + windows(b, 20))
    report = detection_report(switching, switch_at=20)
    assert stationary.mean() <= 0.05
    assert report["detected"] and report["delay_windows"] == 0 and report["false_alarm_rate"] <= 0.1
    with pytest.raises(ValueError, match="vocab_size=50"):
        token_distribution(np.array([3, 77]), vocab)


def test_curriculum_stages_draw_from_the_easy_or_hard_end():
    blocks = torch.arange(100).repeat_interleave(4).reshape(100, 4)
    difficulty = np.arange(100.0)  # block i has difficulty i
    easy = ordered_batches(blocks, difficulty, "curriculum", steps=8, batch_size=5, stages=4, seed=0)
    hard = ordered_batches(blocks, difficulty, "anti-curriculum", steps=8, batch_size=5, stages=4, seed=0)
    assert all(b[:, 0].max() < 25 for b in easy[:2]) and all(b[:, 0].min() >= 75 for b in hard[:2])
    assert max(b[:, 0].max() for b in easy[6:]) >= 75  # the last stage draws from everything
    assert unigram_difficulty(torch.tensor([[0, 0, 0], [1, 2, 3]]), 4).argmax() == 1  # rare tokens are harder
    with pytest.raises(ValueError, match="order='sorted'"):
        ordered_batches(blocks, difficulty, "sorted", 2, 5, 2, 0)


def test_dp_gradient_clips_each_sample_then_adds_noise():
    grads = [[torch.tensor([3.0, 4.0])], [torch.tensor([0.3, 0.4])]]  # norms 5 and 0.5
    clean = clipped_noisy_gradient(grads, clip=1.0, noise_multiplier=0.0, expected_batch_size=2)
    assert clean[0] == pytest.approx(torch.tensor([(0.6 + 0.3) / 2, (0.8 + 0.4) / 2]), abs=1e-5)
    noisy = [clipped_noisy_gradient(grads, 1.0, 2.0, 2, torch.Generator().manual_seed(s))[0] for s in range(2000)]
    spread = (torch.stack(noisy) - clean[0]).std(0)
    assert spread == pytest.approx(torch.tensor([1.0, 1.0]), rel=0.08)  # σ·C / B = 2 · 1 / 2
    with pytest.raises(ValueError, match="clip > 0"):
        clipped_noisy_gradient(grads, clip=0.0, noise_multiplier=1.0, expected_batch_size=2)


def test_per_sample_gradients_and_dp_step_equal_opacus_on_a_dense_model():
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = tiny_lm(n_routed_experts=0)
    ids = pattern_task("t", 0, 32, 0).train[:4]
    ours = per_sample_gradients(model, ids)
    reference = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = GradSampleModule(reference)
        optimizer = DPOptimizer(torch.optim.SGD(reference.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=0.5,
                                expected_batch_size=4)
        wrapped(ids, labels=ids).loss.backward()  # (opacus warns that the token ids need no gradient)
    samples = [p.grad_sample for p in reference.parameters()]
    for i in range(4):
        assert all(torch.allclose(g, s[i], atol=1e-6) for g, s in zip(ours[i], samples))
    optimizer.pre_step()  # opacus clips per sample, sums and scales into p.grad
    ours_dp = clipped_noisy_gradient(ours, clip=0.5, noise_multiplier=0.0, expected_batch_size=4)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(ours_dp, reference.parameters()))


def test_the_non_private_reference_sums_the_per_sample_gradients_in_one_pass():
    model = tiny_lm()  # MoE: the model the chapter fine-tunes
    ids = pattern_task("t", 0, 32, 0).train[:5]
    total = [torch.stack(column).sum(0) for column in zip(*per_sample_gradients(model, ids))]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(summed_gradient(model, ids), total))
    blocks = pattern_task("t", 0, 32, 0).train
    reference = dp_finetune(tiny_lm(), blocks, blocks[:8], 3, 0.2, None, 0.0, lr=1e-3, delta=1e-5)
    unclipped = dp_finetune(tiny_lm(), blocks, blocks[:8], 3, 0.2, 1e6, 0.0, lr=1e-3, delta=1e-5)  # per example
    assert reference["val_loss"] == pytest.approx(unclipped["val_loss"], abs=1e-4)  # the same batches, too
    assert reference["epsilon"] == float("inf")
    with pytest.raises(ValueError, match="noise_multiplier=1.0 needs a clipping norm"):
        dp_finetune(tiny_lm(), blocks, blocks[:8], 1, 0.2, None, 1.0, lr=1e-3, delta=1e-5)


@pytest.mark.parametrize("sigma, q, steps", [(1.0, 0.01, 100), (0.7, 0.05, 300), (2.0, 0.004, 1000), (1.1, 1.0, 10)])
def test_accountant_matches_opacus_for_the_same_orders(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    orders = tuple(range(2, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus warns when the best order is the smallest one searched
        expected, order = accountant.get_privacy_spent(delta=1e-5, alphas=list(orders))
    assert rdp_epsilon(sigma, q, steps, 1e-5, orders) == (pytest.approx(expected, rel=1e-9), order)
    assert rdp_epsilon(0.0, q, steps, 1e-5)[0] == float("inf")


def test_opacus_support_is_reported_for_dense_and_moe_models():
    dense, moe = opacus_support(tiny_lm(n_routed_experts=0)), opacus_support(tiny_lm())
    assert "wraps the model" in dense.result.iloc[-1]
    assert "refuses" in moe.result.iloc[-1] and "Router" in moe.result.iloc[-1]


def test_steps_to_target_reads_a_running_mean_and_says_when_it_is_never_reached():
    losses = [5.0, 1.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert steps_to_target(losses, 3.0, window=1) == 2.0  # one noisy batch is enough without a mean
    assert steps_to_target(losses, 2.9, window=2) == 6.0  # means 5, 3, 3, 4.5, 3.5, then (3 + 2) / 2 = 2.5 at step 6
    assert steps_to_target([5.0, 5.0, 1.0], 3.0, window=2) == 3.0
    assert steps_to_target([2.0, 9.0, 9.0], 3.0, window=3) == 1.0  # starting at the target counts from step 1
    assert np.isnan(steps_to_target(losses, 0.5, window=2))
    with pytest.raises(ValueError, match="window=0"):
        steps_to_target(losses, 1.0, window=0)


def test_a_cipher_is_one_permutation_of_the_vocabulary_per_seed():
    task = Task("t", torch.tensor([[1, 2, 3, 2]]), torch.tensor([[3, 1, 0, 0]]))
    first, again, other = ciphered(task, 8, seed=1), ciphered(task, 8, seed=1), ciphered(task, 8, seed=2)
    assert torch.equal(first.train, again.train) and not torch.equal(first.train, other.train)
    # the same id maps to the same new id everywhere, different ids to different ones: a permutation
    mapping = dict(zip(torch.cat([task.train, task.test]).flatten().tolist(),
                       torch.cat([first.train, first.test]).flatten().tolist()))
    assert len(set(mapping.values())) == len(mapping) == 4 and first.train[0, 1] == first.train[0, 3]
    with pytest.raises(ValueError, match="token id 3; a cipher of 3 ids"):
        ciphered(task, 3, seed=1)
