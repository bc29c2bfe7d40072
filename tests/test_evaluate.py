"""dstutor.evaluate: metrics on hand-computed cases, bootstrap coverage, deterministic noise, adversarial
validation, lm-eval offline equal to our scoring, the matrix, and the errors the issue names."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dstutor.data.tokenizer import chat_prompt, train_tokenizer
from dstutor.evaluate.adversarial import adversarial_auc, detection_rate, out_of_fold_scores
from dstutor.evaluate.harness import export_checkpoint, run_lm_eval, write_task
from dstutor.evaluate.matrix import SEED_WEIGHTS, dimension_scores, raw_measures, top_model_stability, weighted_score
from dstutor.evaluate.lineup import fine_tuned_lineup
from dstutor.metrics import METRICS, bootstrap_ci, mean_with_ci, score, score_with_ci
from dstutor.evaluate.noise import KINDS, add_noise, noisy
from dstutor.evaluate.probes import counterfactual_gap, robustness_curve, robustness_score
from dstutor.evaluate.scoring import (attention_entropy, calibrated_predictions, choice_predictions, continuation_logliks,
                                      interleaved_speed, text_losses)
from dstutor.evaluate.suite import Suite, chance_levels, cloze_docs, evaluate
from dstutor.viz.evaluate import scores_with_chance
from dstutor.widgets.weights import WeightsPanel
from tiny import tiny_lm

REVIEWS = ["房间很干净，服务也很好，下次还来。", "质量太差了，用了两天就坏了。", "物流很快，包装完好，推荐购买！",
           "客服态度恶劣，再也不买了。", "性价比很高，和描述一致。", "味道一般，价格偏贵。"]


@pytest.fixture(scope="module")
def tokenizer():
    texts = REVIEWS * 10 + ["画蛇添足是什么意思？多此一举。", "一心一意：专心", "好评 差评 这条评论是好评还是差评？"] * 10
    return train_tokenizer(texts, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def docs(tokenizer):
    rng = np.random.default_rng(0)
    return [{"question": f"评论：{text}", "context": chat_prompt(tokenizer, f"评论：{text}", tokenize=False),
             "choices": ["好评", "差评", "一般"], "label": int(rng.integers(3))} for text in REVIEWS]


def test_bleu_on_chinese_counts_characters_and_matches_the_formula():
    # Every n-gram of the 4-character hypothesis is in the 7-character reference: BLEU = brevity penalty.
    assert score("bleu", ["我爱北京"], ["我爱北京天安门"]) == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-6)
    assert score("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)


def test_chrf_and_rouge_on_hand_computed_cases():
    assert score("chrf", ["画蛇添足"], ["画蛇添足"]) == pytest.approx(100)
    assert score("chrf", ["画蛇添足"], ["一心一意"]) == pytest.approx(0)
    # 2 of 4 characters shared: precision = recall = 1/2 → F = 50 (rouge-score's own tokenizer would drop them all)
    assert score("rouge1", ["我爱北京"], ["我爱上海"]) == pytest.approx(50)
    assert score("rougeL", ["北京我爱"], ["我爱北京"]) == pytest.approx(50)
    assert score("rouge1", ["Hello world"], ["hello there"]) == pytest.approx(50)


def test_accuracy_and_macro_f1_of_a_constant_guess():
    assert score("accuracy", [0, 0, 0, 0], [0, 0, 1, 1]) == 0.5
    # class 0: precision 1/2, recall 1 → F1 2/3; class 1 never predicted → 0; mean 1/3
    assert score("macro_f1", [0, 0, 0, 0], [0, 0, 1, 1]) == pytest.approx(1 / 3)
    assert chance_levels([{"choices": ["a", "b"], "label": 0}, {"choices": ["a", "b"], "label": 1}]) == \
        pytest.approx({"accuracy": 0.5, "macro_f1": 0.5})


@pytest.mark.parametrize("call, message", [
    (lambda: score("perplexity2", [1], [1]), "unknown metric 'perplexity2'"),
    (lambda: score("chrf", [], []), "empty"),
    (lambda: score("bleu", ["a", "b"], ["a"]), "2 predictions but 1 references"),
    (lambda: mean_with_ci([]), "empty"),
])
def test_bad_metric_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bootstrap_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(60):
        sample = rng.binomial(1, 0.3, 200)
        _, low, high = score_with_ci("accuracy", sample.tolist(), [1] * 200, n_boot=300, seed=trial)
        covered += low <= 0.3 <= high
    assert covered / 60 >= 0.85
    low, high = bootstrap_ci(lambda idx: float(np.arange(10)[idx].mean()), 10, n_boot=200)
    assert low < 4.5 < high



@pytest.mark.parametrize("name", sorted(METRICS))
def test_bootstrap_from_item_statistics_equals_rescoring_every_resample(name):
    rng = np.random.default_rng(1)
    if name in ("accuracy", "macro_f1"):
        predictions, references = rng.integers(0, 3, 40).tolist(), rng.integers(0, 3, 40).tolist()
    else:
        predictions = ["".join(rng.choice(list("画蛇添足多此一举守株待兔"), rng.integers(1, 9))) for _ in range(40)]
        references = ["".join(rng.choice(list("画蛇添足多此一举比喻做事"), rng.integers(2, 9))) for _ in range(40)]
    function = METRICS[name]
    rescored = bootstrap_ci(lambda idx: function([predictions[i] for i in idx], [references[i] for i in idx]), 40,
                            n_boot=60, seed=3)
    assert score_with_ci(name, predictions, references, n_boot=60, seed=3) == (function(predictions, references),
                                                                                *rescored)

@pytest.mark.parametrize("kind", KINDS)
def test_noise_is_deterministic_by_seed_and_zero_level_is_identity(kind):
    text = "床前明月光，疑是地上霜。Hello, world 123!" * 3
    assert add_noise(text, kind, 0.3, seed=1) == add_noise(text, kind, 0.3, seed=1)
    assert add_noise(text, kind, 0.3, seed=1) != add_noise(text, kind, 0.3, seed=2)
    assert add_noise(text, kind, 0.0, seed=1) == text
    assert noisy([text, text], kind, 0.3, seed=1)[0] == add_noise(text, kind, 0.3, seed=1)


def test_noise_kinds_do_what_they_say():
    assert add_noise("abc 123", "width", 1.0) == "ａｂｃ\u3000１２３"
    assert add_noise("ａｂｃ", "width", 1.0) == "abc"
    assert add_noise("舉頭望明月", "script", 1.0) == "举头望明月"
    assert sorted(add_noise("abcdefgh", "swap", 0.5, seed=3)) == sorted("abcdefgh")
    with pytest.raises(ValueError, match="unknown noise kind 'blur'"):
        add_noise("x", "blur", 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        add_noise("x", "typo", 1.5)


def test_adversarial_validation_is_chance_on_one_distribution_and_high_on_a_shifted_one():
    rng = np.random.default_rng(0)
    pool = ["".join(rng.choice(list("房间干净服务很好质量太差物流快包装价格贵"), 12)) for _ in range(400)]
    assert abs(adversarial_auc(pool[:200], pool[200:]) - 0.5) < 0.1
    shifted = noisy(pool[200:], "script", 0.6)
    assert adversarial_auc(pool[:200], shifted) > 0.95
    reused = out_of_fold_scores(pool[:200], shifted, seed=0)  # scores computed once give the same AUC
    assert adversarial_auc(pool[:200], shifted, scores=reused) == adversarial_auc(pool[:200], shifted)
    assert detection_rate(np.arange(100), [200, 50]) == 0.5
    with pytest.raises(ValueError, match="folds=5"):
        adversarial_auc(pool[:3], pool[3:10])


def test_our_choice_scores_equal_lm_eval_offline(tokenizer, docs, tmp_path):
    model = tiny_lm().eval()
    export_checkpoint(model, tokenizer, tmp_path / "checkpoint")
    write_task(tmp_path / "tasks", "reviews_mc", docs)
    table, logliks = run_lm_eval(tmp_path / "checkpoint", tmp_path / "tasks", ["reviews_mc"])
    predictions, ours = choice_predictions(model, tokenizer, docs)
    assert np.abs(np.concatenate(ours) - np.concatenate(logliks["reviews_mc"])).max() < 1e-4
    assert table.accuracy[0] == pytest.approx(np.mean([p == d["label"] for p, d in zip(predictions, docs)]))
    assert table.n[0] == len(docs)


def test_continuation_loglik_is_the_sum_of_next_token_log_probabilities(tokenizer):
    model = tiny_lm().eval()
    context, continuation = chat_prompt(tokenizer, "一心一意", tokenize=False), "专心"
    ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n = len(ids) - len(tokenizer(context, add_special_tokens=False)["input_ids"])
    logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    expected = sum(logprobs[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))
    assert continuation_logliks(model, tokenizer, [(context, continuation)])[0] == pytest.approx(expected, abs=1e-4)


def test_a_token_across_the_boundary_keeps_the_context_tokenised_alone_as_lm_eval_does(tokenizer):
    model = tiny_lm().eval()
    context, continuation = "这条评论是好", "评还是差评？"  # 好评 is one token of the whole, 好 ends the context alone
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    assert whole[:len(context_ids)] != context_ids  # the case this test is about
    ids = context_ids + whole[len(context_ids):]
    logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    expected = sum(logprobs[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids)))
    assert continuation_logliks(model, tokenizer, [(context, continuation)])[0] == pytest.approx(expected, abs=1e-4)


def test_evaluate_returns_tidy_rows_and_a_saved_checkpoint_scores_the_same(tokenizer, docs, tmp_path):
    suite = Suite(perplexity={"reviews": REVIEWS}, choices={"reviews_mc": docs},
                  generation={"echo": pd.DataFrame({"prompt": REVIEWS[:2], "answer": REVIEWS[:2]})},
                  max_new_tokens=4, n_boot=50)
    model = tiny_lm().eval()
    table = evaluate(model, suite, tokenizer, name="tiny")
    assert list(table.columns) == ["model", "task", "metric", "value", "ci_low", "ci_high", "n", "chance"]
    assert set(table.metric) == {"perplexity", "accuracy", "macro_f1", "chrf", "bleu", "rougeL", "latency_s", "tokens_per_s"}
    assert (table.ci_low <= table.value + 1e-9).all() and (table.value <= table.ci_high + 1e-9).all()
    assert table.set_index("metric").chance["accuracy"] == pytest.approx(1 / 3)
    export_checkpoint(model, tokenizer, tmp_path / "saved")
    again = evaluate(tmp_path / "saved", suite)
    ppl = lambda t: t[t.metric == "perplexity"].value.item()
    assert again.model[0] == "saved" and ppl(again) == pytest.approx(ppl(table), rel=1e-5)


def test_evaluate_errors_name_the_problem(tokenizer, tmp_path):
    suite = Suite(perplexity={}, choices={})
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing"):
        evaluate(tmp_path / "missing", suite)
    with pytest.raises(ValueError, match="pass the tokenizer"):
        evaluate(tiny_lm(), suite)
    with pytest.raises(ValueError, match="task is empty"):
        choice_predictions(tiny_lm(), tokenizer, [])


def test_attention_concentration_lies_in_0_1_per_layer_and_head(tokenizer):
    model = tiny_lm().eval()
    table = attention_entropy(model, torch.tensor([tokenizer(REVIEWS[0])["input_ids"][:12]]))
    assert len(table) == model.config.num_layers * model.config.num_heads
    assert table.concentration.between(0, 1).all() and (table.entropy >= 0).all()


def test_interleaved_speed_times_every_model_each_round(tokenizer):
    table = interleaved_speed({"a": tiny_lm(0), "b": tiny_lm(1)}, tokenizer, "一心一意", new_tokens=3, rounds=3)
    assert list(table.index) == ["a", "b"]
    assert ((table["min"] <= table.tokens_per_s) & (table.tokens_per_s <= table["max"]) & (table["min"] > 0)).all()


def test_counterfactual_gap_is_zero_for_identical_variants(tokenizer):
    result = counterfactual_gap(tiny_lm(), tokenizer, REVIEWS, variants=("我", "我"), n_boot=50)
    assert result["gap"] == pytest.approx(0, abs=1e-7) and result["mean_abs_change"] == pytest.approx(0, abs=1e-7)


def test_robustness_score_is_clean_over_noisy_perplexity():
    curve = pd.DataFrame({"kind": ["typo", "typo", "swap", "swap"], "level": [0, 0.1, 0, 0.1],
                          "perplexity": [10.0, 20.0, 10.0, 10.0], "accuracy": [0.5] * 4})
    assert robustness_score(curve, 0.1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="levels 0 and 0.3"):
        robustness_score(curve, 0.3)


def test_matrix_weights_and_the_widget_rerank_models():
    measures = pd.DataFrame({"rougeL": [80.0, 10.0], "robustness": [0.5, 0.9], "tokens_per_s": [50.0, 100.0],
                             "concentration": [0.2, 0.4], "gap": [0.1, -0.3], "sentiment_macro_f1": [0.4, 0.6],
                             "sentiment_chance": [0.5, 0.5]}, index=["writer", "sprinter"])
    scores = dimension_scores(measures)
    assert scores.loc["sprinter", "efficiency"] == 1.0 and scores.loc["writer", "fairness"] == pytest.approx(0.9)
    # adaptability: the share of the way from chance to 1, and 0 below chance
    assert scores.loc["sprinter", "adaptability"] == pytest.approx(0.2) and scores.loc["writer", "adaptability"] == 0.0
    assert weighted_score(scores, {"accuracy": 1.0}).idxmax() == "writer"
    assert weighted_score(scores, {"efficiency": 2.0}).idxmax() == "sprinter"
    assert weighted_score(scores).loc["writer"] == pytest.approx(sum(SEED_WEIGHTS[d] * scores.loc["writer", d]
                                                                     for d in SEED_WEIGHTS))
    assert top_model_stability(scores, {**{d: 0.01 for d in SEED_WEIGHTS}, "accuracy": 1.0}).loc["writer"] > 0.9
    panel = WeightsPanel(scores)
    for name, slider in panel.sliders.items():
        slider.value = 1.0 if name == "efficiency" else 0.0
    assert panel.ranking().index[0] == "sprinter"
    with pytest.raises(ValueError, match="unknown dimensions \\['speed'\\]"):
        weighted_score(scores, {"speed": 1.0})
    with pytest.raises(ValueError, match="lack columns \\['gap'\\]"):
        dimension_scores(measures.drop(columns="gap"))


def test_robustness_curve_measures_the_clean_inputs_once_for_every_kind(tokenizer, docs):
    model = tiny_lm().eval()
    curve = robustness_curve(model, tokenizer, REVIEWS, docs, KINDS, [0.0, 0.3])
    clean = curve[curve.level == 0]
    assert list(clean.kind) == list(KINDS) and clean.perplexity.nunique() == 1 and clean.accuracy.nunique() == 1
    assert clean.perplexity.iloc[0] == pytest.approx(float(np.exp(text_losses(model, tokenizer, REVIEWS).mean())))
    noisy_rows = curve[curve.level == 0.3].set_index("kind")
    typo = robustness_curve(model, tokenizer, REVIEWS, docs, ["typo"], [0.3]).set_index("kind")
    assert noisy_rows.loc["typo", "perplexity"] == typo.loc["typo", "perplexity"]
    only_perplexity = robustness_curve(model, tokenizer, REVIEWS, docs, KINDS, [0.0, 0.3], with_accuracy=False)
    assert only_perplexity.accuracy.isna().all() and only_perplexity.perplexity.equals(curve.perplexity)


def test_lineup_trains_the_models_asked_for(tokenizer):
    pairs = pd.DataFrame({"prompt": ["画蛇添足是什么意思？", "一心一意是什么意思？"] * 2, "answer": ["多此一举。", "专心。"] * 2})
    base, start = tiny_lm(0), tiny_lm(1)
    before = [p.clone() for p in base.parameters()]
    assert list(fine_tuned_lineup(base, start, tokenizer, pairs, 1, names=("distilled",))) == ["distilled"]
    assert list(fine_tuned_lineup(base, start, tokenizer, pairs, 1, names=("LoRA", "SFT"))) == ["SFT", "LoRA"]
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), before))  # the inputs stay unchanged
    with pytest.raises(ValueError, match=r"unknown lineup models \['RL'\]"):
        fine_tuned_lineup(base, start, tokenizer, pairs, 1, names=("SFT", "RL"))


def test_lineup_distils_from_the_teacher_given_as_from_its_own_sft_model(tokenizer):
    pairs = pd.DataFrame({"prompt": ["画蛇添足是什么意思？", "一心一意是什么意思？"] * 2, "answer": ["多此一举。", "专心。"] * 2})
    base, start = tiny_lm(0), tiny_lm(1)
    both = fine_tuned_lineup(base, start, tokenizer, pairs, 2, seed=3, names=("SFT", "distilled"))
    given = fine_tuned_lineup(base, start, tokenizer, pairs, 2, seed=3, names=("distilled",), teacher=both["SFT"])
    assert list(given) == ["distilled"]
    assert all(torch.equal(p, q) for p, q in zip(given["distilled"].parameters(), both["distilled"].parameters()))
    other = fine_tuned_lineup(base, start, tokenizer, pairs, 2, seed=3, names=("distilled",), teacher=tiny_lm(2))
    assert not all(torch.equal(p, q) for p, q in zip(other["distilled"].parameters(), both["distilled"].parameters()))


def test_calibration_divides_out_a_label_prior_and_ignores_a_constant_bias():
    # Every review prefers label 1 by a margin that the content-free input shows as well: the prior, not the review.
    logliks = [np.array([-1.8, -1.0]), np.array([-1.5, -1.0]), np.array([-3.0, -1.0])]
    free = [np.array([-2.2, -1.0]), np.array([-1.8, -1.0])]
    assert [int(np.argmax(row)) for row in logliks] == [1, 1, 1]
    calibrated = calibrated_predictions(logliks, free)
    assert calibrated == [0, 0, 1]  # the first two prefer 1 by less than the prior does
    bias = np.array([5.0, -3.0])  # a bias every context shares (a label word's frequency) changes nothing
    assert calibrated_predictions([row + bias for row in logliks], [row + bias for row in free]) == calibrated
    with pytest.raises(ValueError, match="no content-free scores"):
        calibrated_predictions(logliks, [])
    with pytest.raises(ValueError, match="the same choices"):
        calibrated_predictions(logliks, [np.zeros(3)])


def test_evaluate_adds_calibrated_rows_equal_to_calibrating_by_hand(tokenizer, docs):
    free = [chat_prompt(tokenizer, text, tokenize=False) for text in ("N/A", "")]
    suite = Suite(perplexity={}, choices={"reviews_mc": docs}, content_free={"reviews_mc": free}, n_boot=20)
    model = tiny_lm().eval()
    table = evaluate(model, suite, tokenizer).set_index(["task", "metric"]).value
    _, logliks = choice_predictions(model, tokenizer, docs)
    _, free_logliks = choice_predictions(model, tokenizer, [{"context": c, "choices": docs[0]["choices"]} for c in free])
    by_hand = calibrated_predictions(logliks, free_logliks)
    assert table[("reviews_mc_calibrated", "accuracy")] == pytest.approx(
        np.mean([p == d["label"] for p, d in zip(by_hand, docs)]))


def test_cloze_items_hold_the_true_continuation_and_contexts_end_in_a_character():
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefg  \n"), 60)) for _ in range(12)]  # contexts may end in whitespace
    items = cloze_docs(texts, 6, context_chars=20, continuation_chars=10, seed=1)
    assert len(items) == 6
    for text, item in zip(texts, items):
        assert not item["context"][-1].isspace() and text.startswith(item["context"])
        truth = item["choices"][item["label"]]
        assert text[len(item["context"]):].startswith(truth) and len(set(item["choices"])) == 4
        assert all(choice in " ".join(texts) for choice in item["choices"])  # distractors are cut from other texts
    with pytest.raises(ValueError, match="need ≥ 20"):
        cloze_docs(texts, 20)
    with pytest.raises(ValueError, match="distinct continuations"):
        cloze_docs(["the same text, again and again, the same"] * 6, 2, context_chars=10, continuation_chars=5)


def test_raw_measures_read_one_seeds_rows_and_name_missing_models():
    rows = pd.DataFrame({"model": ["a", "a", "a", "b", "b", "b"],
                         "task": ["explain_sft", "explain_unseen", "sentiment_calibrated"] * 2,
                         "metric": ["rougeL", "rougeL", "macro_f1"] * 2, "value": [40.0, 20.0, 0.6, 10.0, 10.0, 0.4],
                         "chance": [np.nan, np.nan, 0.5] * 2})
    probes = pd.DataFrame({"robustness": [0.9, 0.8], "concentration": [0.3, 0.2], "gap": [0.01, -0.02]}, index=["b", "a"])
    measures = raw_measures(rows, probes, pd.Series({"a": 100.0, "b": 50.0}))
    assert list(measures.index) == ["b", "a"] and measures.loc["a", "rougeL"] == 20.0  # the unseen idioms only
    assert measures.loc["a", "sentiment_macro_f1"] == 0.6 and measures.loc["b", "tokens_per_s"] == 50.0
    assert dimension_scores(measures).loc["a", "efficiency"] == 1.0
    with pytest.raises(ValueError, match=r"'speed': \['b'\]"):  # a model missing one measure only
        raw_measures(rows, probes, pd.Series({"a": 1.0}))


def test_scores_with_chance_puts_three_tasks_to_a_row():
    table = pd.DataFrame([{"model": m, "task": t, "metric": "accuracy", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                           "chance": 0.25} for t in "abcde" for m in ("x", "y")])
    fig = scores_with_chance(table, list("abcde"), "accuracy", "title", "accuracy")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 6 and [ax.get_title() for ax in visible] == list("abcde")
