"""dstutor.finetune: LoRA equals its formula and survives merge/save/load, freezing, masks, clear errors."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from dstutor.data.packing import BlockLoader
from dstutor.data.tokenizer import train_tokenizer
from dstutor.metrics import IGNORE_INDEX, repeated_ngram_fraction
from dstutor.finetune.classify import (LastTokenClassifier, classification_scores, encode_classification,
                                       predict_proba)
from dstutor.finetune.freezing import freeze, trainable_summary, training_step_cost
from dstutor.finetune.lora import add_lora, adapted_weights, lora_config
from dstutor.finetune.methods import Method, finetune
from dstutor.finetune.multitask import TASKS, MultiTaskModel, paired_tasks
from dstutor.finetune.padding import trim_padding
from dstutor.data.tokenizer import chat_prompt
from dstutor.finetune.sft import answer, answers, encode_sft, sampling_repetition, sft_example
from dstutor.models import DeepSeekConfig, DeepSeekLM
from dstutor.train import TrainConfig
from tiny import tiny_lm


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["画蛇添足是什么意思？多此一举。", "hello world, fine-tuning a tiny model", "成语：比喻做事多余"] * 20
    return train_tokenizer(texts, vocab_size=300, min_frequency=1)


def randomise_adapters(model, std=0.05):
    with torch.no_grad():  # peft initialises B = 0; a trained adapter is not zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=std)


def test_lora_equals_the_from_scratch_formula():
    lm = tiny_lm()
    base = lm.model.layers[0].self_attn.o_proj
    w = base.weight.detach().clone()
    x = torch.randn(2, 5, base.in_features)
    model = add_lora(lm, rank=4, alpha=8, targets=("attention",))
    randomise_adapters(model)
    layer = model.base_model.model.model.layers[0].self_attn.o_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    from_scratch = x @ w.T + (8 / 4) * (x @ a.T @ b.T)  # W x + (alpha / r) B A x
    torch.testing.assert_close(layer(x), from_scratch, atol=1e-6, rtol=1e-5)


def test_lora_reaches_every_target_group_and_freezes_the_base():
    model = add_lora(tiny_lm(), rank=2, alpha=4, targets=("attention", "mlp", "experts"))
    report = adapted_weights(model)
    assert set(report.group) == {"attention", "mlp", "experts"}
    # the dense layer's MLP and every MoE layer's shared experts, not only the routed experts
    assert any(".layers.0.mlp.down_proj" in w for w in report.weight)
    assert any("shared_experts.down_proj" in w for w in report.weight)
    assert {w.rsplit(".", 1)[-1] for w in report.weight[report.group == "experts"]} == {"gate_up_proj", "down_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_merged_and_reloaded_adapters_give_the_same_outputs(tmp_path):
    model = add_lora(tiny_lm(), rank=4, alpha=8, targets=("attention", "mlp", "experts"))
    randomise_adapters(model)
    model.eval()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        adapted = model(ids).logits
        model.save_pretrained(tmp_path)
        reloaded = PeftModel.from_pretrained(tiny_lm(), tmp_path).eval()
        torch.testing.assert_close(reloaded(ids).logits, adapted, atol=0, rtol=0)
        merged = model.merge_and_unload()
        assert (merged(ids).logits - adapted).abs().max() <= 1e-5
        assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_lora_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="rank > 0"):
        lora_config(tiny_lm(), rank=0, alpha=8)
    with pytest.raises(ValueError, match="unknown LoRA target groups"):
        lora_config(tiny_lm(), rank=4, alpha=8, targets=("attn",))
    with pytest.raises(ValueError, match="'experts' matches nothing"):
        lora_config(tiny_lm(n_routed_experts=0), rank=4, alpha=8, targets=("experts",))


def test_freezing_by_depth_and_kind():
    model = freeze(tiny_lm(), bottom=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "model.embed_tokens.weight" in frozen and any(n.startswith("model.layers.0.") for n in frozen)
    assert not any(n.startswith("model.layers.1.") for n in frozen)
    top = freeze(tiny_lm(), top=1)
    assert all(p.requires_grad == (not n.startswith("model.layers.2.")) for n, p in top.named_parameters())
    kinds = freeze(tiny_lm(), kinds=("attention",))
    assert all(p.requires_grad == (".self_attn." not in n) for n, p in kinds.named_parameters())
    summary = trainable_summary(kinds)
    assert 0 < summary["trainable"] < summary["total"]
    with pytest.raises(ValueError, match="unknown module kinds"):
        freeze(tiny_lm(), kinds=("attn",))
    with pytest.raises(ValueError, match="3 decoder layers"):
        freeze(tiny_lm(), bottom=4)


def classification_data(tokenizer, n=32):
    frame = pd.DataFrame({"text": ["好评 hello world"] * (n // 2) + ["差评 多此一举"] * (n // 2),
                          "label": [1] * (n // 2) + [0] * (n // 2)})
    return encode_classification(frame, tokenizer, max_len=12)


def test_frozen_weights_are_bit_identical_after_training_and_the_rest_learns(tokenizer):
    base = tiny_lm()
    method = Method("freeze bottom 2", lr=1e-2, bottom=2)
    model = method.build(base, head_classes=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = classification_data(tokenizer)
    history = finetune(model, TrainConfig(steps=30, lr=1e-2, warmup_steps=0, eval_every=0, progress=False), data,
                       data, batch_size=8, fields=("input_ids", "last", "labels"))
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == param.requires_grad, name
    assert history.loss.iloc[-5:].mean() < 0.5 * history.loss.iloc[:3].mean()
    predictions = predict_proba(model, data).argmax(1)
    assert classification_scores(data["labels"], predictions)["accuracy"] == 1.0
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), tiny_lm().parameters()))  # base untouched


def test_last_token_head_ignores_right_padding():
    model = LastTokenClassifier(tiny_lm(), 2).eval()
    ids = torch.randint(3, 300, (1, 6))
    padded = torch.cat([ids, torch.full((1, 4), 2)], dim=1)
    last = torch.tensor([5])
    torch.testing.assert_close(model(input_ids=ids, last=last).logits, model(input_ids=padded, last=last).logits)


def test_answer_only_mask(tokenizer):
    example = sft_example(tokenizer, "画蛇添足是什么意思？", "多此一举。", max_len=48)
    question = chat_prompt(tokenizer, "画蛇添足是什么意思？")
    labels, ids = example["labels"], example["input_ids"]
    assert labels[:len(question)] == [IGNORE_INDEX] * len(question)
    reply = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(reply) == "多此一举。" + tokenizer.eos_token
    assert ids[len(question):len(question) + len(reply)] == reply and len(ids) == len(labels) == 48
    unmasked = sft_example(tokenizer, "画蛇添足是什么意思？", "多此一举。", max_len=48, mask_prompt=False)
    assert unmasked["labels"][:len(question)] == question


def test_finetuning_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match="longer than the context max_len=8"):
        sft_example(tokenizer, "画蛇添足是什么意思？" * 3, "多此一举。", max_len=8)
    with pytest.raises(ValueError, match="empty"):
        encode_sft(pd.DataFrame({"prompt": [], "answer": []}), tokenizer, 32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        encode_classification(pd.DataFrame({"text": ["好评"], "label": [2]}), tokenizer, 8)
    with pytest.raises(ValueError, match="empty"):
        encode_classification(pd.DataFrame({"text": [], "label": []}), tokenizer, 8)
    with pytest.raises(ValueError, match=r"text 1 \(''\) tokenises to nothing"):
        encode_classification(pd.DataFrame({"text": ["好评", ""], "label": [1, 0]}), tokenizer, 8)


def test_step_cost_reports_less_memory_when_frozen(tokenizer):
    data = classification_data(tokenizer, 8).with_format("torch")[:8]
    full = training_step_cost(Method("full").build(tiny_lm(), 2), data, repeats=1)
    lora = training_step_cost(Method("lora", lora_rank=2).build(tiny_lm(), 2), data, repeats=1)
    assert full["step_ms"] > 0 and lora["adamw_state_mb"] < full["adamw_state_mb"] / 2
    assert lora["gradients_mb"] < full["gradients_mb"] and full["memory_mb"] > full["weights_mb"]


def multitask_batch(tokenizer):
    cls = classification_data(tokenizer, 4)
    sft = encode_sft(pd.DataFrame({"prompt": ["画蛇添足是什么意思？"] * 4, "answer": ["多此一举。"] * 4}), tokenizer, 32)
    return paired_tasks(cls, sft).with_format("torch")[:4]


def test_multitask_losses_are_weighted_as_configured(tokenizer):
    batch = multitask_batch(tokenizer)
    static = MultiTaskModel(tiny_lm(), weighting="static", static_weights=(0.7, 0.3)).eval()
    out = static(**batch)
    with torch.no_grad():  # the task embedding starts at zero: each task alone is the plain model
        sentiment = static.classifier(batch["cls_input_ids"], batch["cls_last"], batch["cls_labels"]).loss
        sft = static.classifier.lm(batch["sft_input_ids"], labels=batch["sft_labels"]).main_loss
    torch.testing.assert_close(out.task_losses, torch.stack([sentiment, sft]))
    torch.testing.assert_close(out.loss, 0.7 * sentiment + 0.3 * sft)
    learned = MultiTaskModel(tiny_lm(), weighting="uncertainty").eval()
    with torch.no_grad():
        learned.log_variance_raw.copy_(torch.tensor([0.5, -0.5]) / learned.weight_lr_scale)
    s = torch.tensor([0.5, -0.5])
    torch.testing.assert_close(learned(**batch).loss, (torch.exp(-s) * out.task_losses + s).sum())


def test_learned_task_weights_move_at_their_own_learning_rate(tokenizer):
    """One Adam step moves each s_i by about weight_lr_scale × lr, so 60 steps can move the weights far from 1."""
    learned = MultiTaskModel(tiny_lm(), weighting="uncertainty", weight_lr_scale=30.0)
    optimiser = torch.optim.Adam([learned.log_variance_raw], lr=1e-3)
    learned(**multitask_batch(tokenizer)).loss.backward()
    optimiser.step()
    torch.testing.assert_close(learned.log_variance.detach().abs(), torch.full((2,), 30 * 1e-3), rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="weighting='equal'"):
        MultiTaskModel(tiny_lm(), weighting="equal")


def test_task_embedding_reaches_only_its_task(tokenizer):
    model = MultiTaskModel(tiny_lm()).eval()
    batch = multitask_batch(tokenizer)
    view = model.view("sentiment")
    before = view(input_ids=batch["cls_input_ids"], last=batch["cls_last"]).logits
    with torch.no_grad():
        model.task_embedding.weight[TASKS.index("sft")].fill_(1.0)  # the other task's vector
    torch.testing.assert_close(view(input_ids=batch["cls_input_ids"], last=batch["cls_last"]).logits, before)
    with torch.no_grad():
        model.task_embedding.weight[TASKS.index("sentiment")].fill_(1.0)
    assert not torch.allclose(view(input_ids=batch["cls_input_ids"], last=batch["cls_last"]).logits, before)
    plain = model.classifier(batch["cls_input_ids"], batch["cls_last"]).logits  # no hook left behind
    torch.testing.assert_close(plain, LastTokenClassifier(model.classifier.lm, 2).eval().lm.hidden_states(
        batch["cls_input_ids"])[torch.arange(4), batch["cls_last"]] @ model.classifier.score.weight.T
        + model.classifier.score.bias)


def test_batched_answers_equal_one_prompt_at_a_time(tokenizer):
    model = tiny_lm(vocab_size=tokenizer.vocab_size).eval()
    prompts = ["画蛇添足是什么意思？", "守株待兔是什么意思？", "哪个成语的意思是：多此一举？", "好"]
    batched = answers(model, tokenizer, prompts, max_new_tokens=10)
    assert batched == [answer(model, tokenizer, p, max_new_tokens=10) for p in prompts]
    assert all(tokenizer.eos_token_id not in reply and len(reply) <= 10 for reply in batched)


def test_trimmed_batches_keep_every_loss_and_prediction(tokenizer):
    model = tiny_lm(vocab_size=tokenizer.vocab_size).eval()
    pairs = pd.DataFrame({"prompt": ["画蛇添足是什么意思？", "好", "哪个成语的意思是：多此一举？"],
                          "answer": ["多此一举。", "一心一意", "画蛇添足"]})
    for masked in (True, False):
        sft = encode_sft(pairs, tokenizer, 48, mask_prompt=masked).with_format("torch")[:]
        short = trim_padding(sft)
        longest = max(int((row != IGNORE_INDEX).nonzero().max()) + 1 for row in sft["labels"])
        assert short["input_ids"].shape[1] == short["labels"].shape[1] == longest < 48
        torch.testing.assert_close(model(**short).main_loss, model(**sft).main_loss)
    cls = classification_data(tokenizer, 8).with_format("torch")[:]
    classifier = LastTokenClassifier(model, 2).eval()
    assert trim_padding(cls)["input_ids"].shape[1] == int(cls["last"].max()) + 1
    torch.testing.assert_close(classifier(**trim_padding(cls)).logits, classifier(**cls).logits)
    multi = MultiTaskModel(tiny_lm(vocab_size=tokenizer.vocab_size)).eval()
    batch = multitask_batch(tokenizer)
    torch.testing.assert_close(multi(**trim_padding(batch)).task_losses, multi(**batch).task_losses)


def test_predictions_come_back_in_the_order_of_the_examples(tokenizer):
    frame = pd.DataFrame({"text": ["好评 hello world 多此一举", "差评", "hello", "成语：比喻做事多余 hello world"] * 3,
                          "label": [1, 0, 1, 0] * 3})
    data = encode_classification(frame, tokenizer, max_len=16)
    model = LastTokenClassifier(tiny_lm(), 2).eval()
    rows = data.with_format("torch")[:]
    with torch.no_grad():
        expected = model(input_ids=rows["input_ids"], last=rows["last"]).logits.softmax(-1).numpy()
    np.testing.assert_allclose(predict_proba(model, data, batch_size=5), expected, atol=1e-6)


def test_trimming_loader_streams_the_same_batches_trimmed(tokenizer):
    frame = pd.DataFrame({"text": ["好评 hello world 多此一举", "差评", "hello", "好"] * 4, "label": [1, 0, 1, 0] * 4})
    data = encode_classification(frame, tokenizer, max_len=40)
    fields = ("input_ids", "last", "labels")
    loader = BlockLoader(data, 4, shuffle=True, seed=1, fields=fields)
    trimming = BlockLoader(data, 4, shuffle=True, seed=1, fields=fields, transform=trim_padding)
    pairs = [*zip(trimming.stream(5), itertools.islice(loader.stream(5), 6)), *zip(trimming, loader, strict=True)]
    for ours, theirs in pairs:
        assert ours["input_ids"].shape[1] == int(theirs["last"].max()) + 1 < 40  # trimmed, as far as the batch allows
        assert torch.equal(ours["input_ids"], theirs["input_ids"][:, :ours["input_ids"].shape[1]])
        assert torch.equal(ours["labels"], theirs["labels"])
    assert len(trimming) == len(loader) == 4 and len(list(trimming)) == len(loader)


def test_sampling_repetition_in_batches_equals_one_prompt_at_a_time(tokenizer):
    model = tiny_lm(vocab_size=tokenizer.vocab_size).eval()
    prompts = ["画蛇添足是什么意思？", "守株待兔是什么意思？", "好"]
    table = sampling_repetition(model, tokenizer, prompts, {"greedy": {}}, max_new_tokens=8)
    replies = [answer(model, tokenizer, p, max_new_tokens=8) for p in prompts]
    assert table.loc["greedy", "reply_tokens"] == pytest.approx(np.mean([len(r) for r in replies]))
    assert table.loc["greedy", "repeated_ngrams"] == pytest.approx(
        np.mean([repeated_ngram_fraction(r, 2) if len(r) >= 2 else 0.0 for r in replies]))
    assert table.loc["greedy", "stopped"] == pytest.approx(np.mean([len(r) < 8 for r in replies]))


def test_classification_scores_are_the_metrics_modules_scores():
    # A prediction of a class the references never hold once made chapter 08's macro-F1 (sklearn's default:
    # classes of labels and predictions) differ from chapter 12's (classes of the references) on the same pairs.
    from dstutor.metrics import accuracy, macro_f1

    labels, predictions = [0, 0, 1, 1], [0, 2, 1, 1]
    scores = classification_scores(labels, predictions)
    assert scores == {"accuracy": accuracy(predictions, labels), "macro_f1": macro_f1(predictions, labels)}
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        classification_scores([0, 1], [0, 1, 1])


def test_lora_and_freezing_arithmetic_counts_what_the_real_model_has():
    from dstutor.finetune.at_scale import frozen_bottom_compute_cut, lora_state_cut, lora_trainable
    from dstutor.models.params import layer_counts
    config = DeepSeekConfig.preset("nano")
    real = trainable_summary(add_lora(DeepSeekLM(config), 8, 16.0))  # on the CPU, with storage
    assert lora_trainable(config, 8) == real  # built on the meta device: the same count, no memory
    active = [layer_counts(config, i)[1] for i in range(config.num_layers)]
    step = 6 * (sum(active) + config.vocab_size * config.hidden_size)
    assert frozen_bottom_compute_cut(config, 0) == 0
    assert frozen_bottom_compute_cut(config, 2) == pytest.approx(4 * (active[0] + active[1]) / step)
    assert frozen_bottom_compute_cut(config, config.num_layers) < 2 / 3  # the forward pass and the head always run
    with pytest.raises(ValueError, match="bottom=5: need 0 ≤ bottom ≤ num_layers=4"):
        frozen_bottom_compute_cut(config, 5)
    assert lora_state_cut(1000, 0) == 0.75 and lora_state_cut(1000, 10) == pytest.approx(1 - (4000 + 160) / 16000)
