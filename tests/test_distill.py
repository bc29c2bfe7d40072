"""dstutor.distill: the KD loss against its definition, the Distiller in the Trainer; TRL's GRPO offline."""
import copy

import pytest
import torch
import torch.nn.functional as F

from dstutor.distill import EVERY_SOLUTION, Distiller, compare_students, distil_logits, distillation_loss, teacher_outputs
from dstutor.rl import GRPOConfig, as_pairs, make_problems, supervised, task_model, task_tokenizer, total_reward


@pytest.fixture(scope="module")
def tokenizer():
    return task_tokenizer()


def test_distillation_loss_matches_the_guides_formula_on_labelled_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, 6, -100]])
    loss, kl, ce = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.7)
    keep = labels[:, 1:] != -100
    s, t = student[:, :-1][keep], teacher[:, :-1][keep]
    # [Full training pipeline §6.2]: KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T))·T², plus CE on the labels
    expected_kl = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1)) * 4
    assert torch.allclose(kl, expected_kl) and torch.allclose(ce, F.cross_entropy(s, labels[:, 1:][keep]))
    assert torch.allclose(loss, 0.7 * expected_kl + 0.3 * ce)
    assert distillation_loss(teacher, teacher, labels)[1].item() == pytest.approx(0.0, abs=1e-6)


def test_bad_distillation_settings_are_refused():
    logits = torch.zeros(1, 3, 5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(logits, logits, torch.zeros(1, 3, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="share a vocabulary"):
        distillation_loss(logits, torch.zeros(1, 3, 6), torch.zeros(1, 3, dtype=torch.long))


def test_logit_kd_trains_only_the_student_and_pulls_it_toward_the_teacher(tokenizer):
    train, _ = make_problems("addition", (1,), 60, 1, seed=0)
    teacher = task_model(tokenizer, "small", seed=1)
    supervised(teacher, tokenizer, as_pairs(train), steps=40, lr=1e-2)
    frozen = copy.deepcopy(teacher.state_dict())
    student = task_model(tokenizer, "nano", seed=2)
    encoded = tokenizer([p.prompt + p.solution for p in train[:8]], padding=True, return_tensors="pt")
    batch, labels = encoded["input_ids"], encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)

    def kl_to_teacher():
        with torch.no_grad():
            return distillation_loss(student(batch).logits, teacher(batch).logits, labels)[1].item()

    before = kl_to_teacher()
    history = distil_logits(student, teacher, tokenizer, as_pairs(train), steps=30, lr=1e-2)
    assert history.loss.iloc[-5:].mean() < history.loss.iloc[:5].mean()
    assert kl_to_teacher() < before / 2
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    model = Distiller(student, teacher).train()
    assert model.student.training and not model.teacher.training


def test_teacher_outputs_are_its_greedy_replies(tokenizer):
    problems, _ = make_problems("addition", (1,), 5, 1, seed=0)
    teacher = task_model(tokenizer, "nano", seed=0)
    rows = teacher_outputs(teacher, tokenizer, problems, max_new_tokens=6)
    assert list(rows.prompt) == [p.prompt for p in problems] and rows.answer.str.len().le(6 * 9).all()


def test_students_learn_from_the_labelled_solutions_the_teachers_samples_or_every_solution(tokenizer, tmp_path,
                                                                                          monkeypatch):
    from dstutor.rl.pipeline import Recipe
    monkeypatch.setenv("DSTUTOR_CACHE", str(tmp_path))
    train, test = make_problems("addition", (1,), 40, 4, seed=0)
    teacher = task_model(tokenizer, "nano", seed=0)
    supervised(teacher, tokenizer, as_pairs(train), steps=60, lr=1e-2)  # so that some of its samples are right
    recipe = Recipe(size="nano", sft_steps=4, sft_lr=1e-2, sft_examples=10, eval_samples=2, eval_tokens=24)
    students = compare_students(teacher, tokenizer, train, test, recipe, [0], samples=2).set_index("method")
    assert list(students.index) == ["SFT on the labelled solutions", "logit KD (T=2, α=0.7)",
                                    "R1 distillation: teacher's correct samples", EVERY_SOLUTION]
    assert students.examples.tolist()[:2] == [10, 10] and students.examples[EVERY_SOLUTION] == 40
    assert 0 < students.examples["R1 distillation: teacher's correct samples"] <= 80  # 40 prompts × 2 samples, filtered
    every = compare_students(teacher, tokenizer, train, test, Recipe(size="nano", sft_steps=4, sft_lr=1e-2,
                                                                      eval_samples=2, eval_tokens=24), [0], samples=2)
    assert EVERY_SOLUTION not in set(every.method) and every.examples.iloc[0] == 40


def test_trl_grpo_runs_offline_and_returns_our_model(tokenizer):
    from dstutor.rl.trl_check import trl_grpo
    train, _ = make_problems("addition", (1,), 20, 1, seed=0)
    policy = task_model(tokenizer, "nano", seed=0)
    supervised(policy, tokenizer, as_pairs(train), steps=30, lr=1e-2)  # so that rewards differ within groups
    config = GRPOConfig(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=24, lr=1e-3, progress=False)
    trained, history = trl_grpo(policy, tokenizer, train, total_reward, config)
    assert list(history.step) == [1, 2] and {"reward", "accuracy", "kl", "degenerate"} <= set(history.columns)
    assert history.degenerate.min() < 1
    assert type(trained) is type(policy)
    assert {k: v.shape for k, v in trained.state_dict().items()} == {k: v.shape for k, v in policy.state_dict().items()}
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), policy.state_dict().values()))


def test_trl_grpo_loss_equals_ours_on_one_fixed_batch(tokenizer):
    from dstutor.rl import group_advantages, grpo_loss, rollout, score, token_logprobs
    from dstutor.rl.trl_check import trl_grpo_loss
    train, _ = make_problems("addition", (2,), 20, 1, seed=0)  # every prompt "ab+cd=": one length
    reference = task_model(tokenizer, "nano", seed=0).eval()
    policy = copy.deepcopy(reference)
    supervised(policy, tokenizer, as_pairs(train), steps=20, lr=1e-2)  # the KL term has something to measure
    samples = rollout(policy, tokenizer, train[:3], 4, 12, 1.0, torch.Generator().manual_seed(0))
    rewards = score(samples, total_reward) + torch.arange(12.0).view(3, 4) / 100  # groups whose rewards differ
    advantages = group_advantages(rewards).flatten()
    config = GRPOConfig(beta=0.04)
    with torch.no_grad():
        logp, ref_logp = (token_logprobs(m.eval(), samples.sequences) for m in (policy, reference))
    ours, _ = grpo_loss(logp, logp, ref_logp, advantages, samples.mask, config.clip_eps, config.beta)
    theirs = trl_grpo_loss(policy, tokenizer, samples, advantages, ref_logp, config)
    assert ours.abs() > 1e-3 and torch.isclose(ours, theirs, atol=1e-5), (ours, theirs)
    mixed = rollout(policy, tokenizer, [train[0], *make_problems("addition", (1,), 2, 1, seed=0)[0]], 2, 6, 1.0)
    with pytest.raises(ValueError, match="prompts of \\[4, 6\\] tokens"):
        trl_grpo_loss(policy, tokenizer, mixed, torch.zeros(6), None, config)


def test_memoised_teacher_logits_equal_a_fresh_forward_where_the_loss_reads_them(tokenizer):
    train, _ = make_problems("addition", (1,), 40, 1, seed=0)
    teacher = task_model(tokenizer, "small", seed=1).eval()
    encoded = tokenizer([p.prompt + p.solution for p in train[:6]], padding=True, return_tensors="pt")
    ids, labels = encoded["input_ids"], encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    memo = {}
    distiller = Distiller(task_model(tokenizer, "nano", seed=2), teacher, memo=memo)
    distiller.teacher_logits(ids[:4], labels[:4])
    rows = [5, 0, 0, 3, 4]  # two rows seen before, one twice, two new
    width = int((labels[rows] != -100).any(0).nonzero().max()) + 1  # a batch cut after its last graded label
    batch, batch_labels = ids[rows, :width], labels[rows, :width]
    read = (batch_labels[:, 1:] != -100)  # the logits positions the loss reads
    with torch.no_grad():
        memoised, fresh = distiller.teacher_logits(batch, batch_labels), teacher(batch).logits
    assert torch.allclose(memoised[:, :-1][read], fresh[:, :-1][read], atol=1e-5)
    assert len(memo) == 6
    histories = [distil_logits(task_model(tokenizer, "nano", seed=2), teacher, tokenizer, as_pairs(train), steps=8,
                               lr=1e-2, memo=shared) for shared in (None, {})]
    assert torch.allclose(torch.tensor(histories[0].loss.values), torch.tensor(histories[1].loss.values), atol=1e-4)


def test_a_distilled_moe_student_updates_its_router_biases_and_takes_label_smoothing():
    # The Trainer calls after_optimizer_step on the student inside the Distiller (no forwarding by hand);
    # the teacher, frozen in eval mode, records no expert loads and stays as it was.
    from test_trainer import pattern_batches, tiny_model

    from dstutor.models.moe import DeepSeekMoE
    from dstutor.train import Trainer

    def biases(model):
        return torch.cat([m.gate.e_score_correction_bias for m in model.modules() if isinstance(m, DeepSeekMoE)])

    student, teacher = tiny_model(0, bias_update_speed=0.01), tiny_model(1, bias_update_speed=0.01)
    student_before, teacher_before = biases(student).clone(), biases(teacher).clone()
    batches = [{"input_ids": ids, "labels": ids} for ids in pattern_batches(2)]
    quiet = dict(steps=2, lr=1e-3, warmup_steps=0, progress=False, eval_every=0)
    plain = Trainer(**quiet).fit(Distiller(student, teacher), batches)
    assert not torch.equal(biases(student), student_before) and torch.equal(biases(teacher), teacher_before)
    smoothed = Trainer(**quiet, label_smoothing=0.2).fit(Distiller(tiny_model(0), teacher), batches)
    assert smoothed.main_loss.iloc[0] != plain.main_loss.iloc[0]  # same start: the smoothing reached the loss
    logits, labels = torch.randn(2, 5, 7), torch.tensor([[-100, 1, 2, 3, 4], [-100, -100, 5, 6, 0]])
    keep = labels[:, 1:] != -100
    ce = distillation_loss(logits, logits, labels, label_smoothing=0.2)[2]
    assert torch.allclose(ce, F.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep], label_smoothing=0.2))
