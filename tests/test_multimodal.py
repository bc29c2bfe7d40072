"""dstutor.multimodal: the contrastive loss, retrieval metrics, data splits, clear errors, and training that works."""
import math
import time

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dstutor import zoo
from dstutor.multimodal import (ConvEncoder, DualEncoder, FusionMatcher, Stages, TextEncoder, TinyViT, chance_recall,
                                clip_loss, digit_images, encode_pairs, fit_clip, fit_staged, recall_at_k,
                                retrieval_scores, retrieve_images, shape_images, split_pairs, text_config,
                                zero_shot_accuracy)
from dstutor.multimodal.fusion import fused_similarity
from dstutor.multimodal.training import caption_labels, seeded_runs, timed_alike
from dstutor.train import TrainConfig


def test_clip_loss_is_symmetric_chance_at_uniform_and_near_zero_when_aligned():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    assert torch.allclose(clip_loss(a, b, 10.0), clip_loss(b, a, 10.0))
    same = F.normalize(torch.ones(8, 16), dim=-1)
    assert clip_loss(same, same, 10.0).item() == pytest.approx(math.log(8), abs=1e-5)
    aligned = torch.eye(8, 16)
    assert clip_loss(aligned, aligned, 100.0).item() < 1e-6
    assert clip_loss(aligned, aligned, 100.0) < clip_loss(aligned, aligned.roll(1, 0), 100.0)


def test_clip_loss_matches_the_row_by_row_definition():
    torch.manual_seed(1)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    logits = 3.0 * a @ b.T
    by_rows = sum(-logits[i].log_softmax(0)[i] - logits[:, i].log_softmax(0)[i] for i in range(5)) / 10
    assert clip_loss(a, b, 3.0).item() == pytest.approx(by_rows.item(), rel=1e-6)


def test_recall_and_chance_on_a_hand_made_case():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    relevant = torch.tensor([[True, False, False], [True, False, False], [False, False, True]])
    # row 0: top item relevant; row 1: relevant item ranked last; row 2: relevant item ranked last
    assert recall_at_k(similarity, relevant, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: 1.0}
    assert chance_recall(relevant, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_shapes_are_deterministic_and_drawn_where_captions_say():
    first, again = shape_images(40, seed=3), shape_images(40, seed=3)
    assert torch.equal(first.images, again.images) and first.facts.equals(again.facts)
    assert not torch.equal(first.images, shape_images(40, seed=4).images)
    for i, fact in enumerate(first.facts.itertuples()):
        top = fact.position.startswith("top")
        left = fact.position.endswith("left")
        quarter = first.images[i, :, :12, :12] if top and left else first.images[i, :, :12, 12:] if top else (
            first.images[i, :, 12:, :12] if left else first.images[i, :, 12:, 12:])
        assert (quarter != 0.5).any(), f"image {i}: nothing drawn at the {fact.position}"
    assert first.caption(0, 3).startswith({"top left": "左上角", "top right": "右上角", "bottom left": "左下角",
                                           "bottom right": "右下角"}[first.facts.position[0]])


def test_split_holds_out_images_and_templates():
    digits = digit_images()
    train, test = split_pairs(digits, test_share=0.2, test_templates=(2, 5), seed=0)
    assert not set(train.image) & set(test.image)
    assert set(test.template) == {2, 5} and not set(train.template) & {2, 5}
    assert len(set(test.image)) == int(len(digits.images) * 0.2)
    assert "seven" in digits.caption(list(digits.facts.digit).index(7), 0)
    with pytest.raises(ValueError, match="some, not all"):
        split_pairs(digits, test_templates=tuple(range(6)))
    with pytest.raises(ValueError, match="test_share"):
        split_pairs(digits, test_share=1.5)


def test_bad_inputs_raise_clear_errors():
    encoder = ConvEncoder(1, 8)
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 8, 8\)"):
        encoder(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="empty batch"):
        encoder(torch.zeros(0, 1, 8, 8))
    with pytest.raises(ValueError, match="pair one to one"):
        clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="empty batch"):
        clip_loss(torch.zeros(0, 4), torch.zeros(0, 4), 1.0)
    model = DualEncoder(encoder, TextEncoder(text_config(50)), dim=8)
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        model(torch.zeros(3, 1, 8, 8), torch.ones(2, 4, dtype=torch.long), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="norm must be one of"):
        DualEncoder(encoder, TextEncoder(text_config(50)), norm="batch")
    with pytest.raises(ValueError, match="patch size 3"):
        TinyViT(1, 8, patch=3)


def test_vit_and_cnn_give_one_feature_vector_per_image():
    pixels = torch.rand(5, 3, 24, 24)
    assert ConvEncoder(3, 24, features=32)(pixels).shape == (5, 32)
    assert TinyViT(3, 24, patch=4, features=32)(pixels).shape == (5, 32)


class ColourTower(nn.Module):
    """Toy image tower: the mean of each colour channel."""
    channels, side, features = 3, 24, 3

    def forward(self, pixels):
        return pixels.mean(dim=(2, 3)) - 0.5


class WordTower(nn.Module):
    """Toy text tower: which of the words red / green / blue the caption's token ids contain."""
    features = 3

    def __init__(self, word_ids):
        super().__init__()
        self.word_ids = word_ids

    def forward(self, input_ids, last):
        return torch.stack([(input_ids == w).any(1).float() for w in self.word_ids], dim=1)


def toy_colour_model(tokenizer):
    word_ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("red", "green", "blue")]
    model = DualEncoder(ColourTower(), WordTower(word_ids), dim=3, norm="none")
    with torch.no_grad():
        model.image_proj.weight.copy_(torch.eye(3))
        model.text_proj.weight.copy_(torch.eye(3))
    return model


def test_caption_search_and_zero_shot_find_the_right_colour_on_a_toy_model():
    tokenizer = zoo.course_tokenizer()
    shapes = shape_images(60, seed=0)
    model = toy_colour_model(tokenizer)
    keep = [i for i, c in enumerate(shapes.facts.colour) if c != "yellow"]  # the toy tower mixes yellow and red
    colours = list(shapes.facts.colour.iloc[keep])
    indices, scores = retrieve_images(model, "a large red circle", shapes.images[keep], tokenizer, k=3)
    assert all(colours[i] == "red" for i in indices) and scores == sorted(scores, reverse=True)
    prompts = {c: [f"a {c} shape", f"something {c}"] for c in ("red", "green", "blue")}
    accuracy = zero_shot_accuracy(model, shapes.images[keep], colours, prompts, tokenizer)
    assert accuracy == 1.0
    with pytest.raises(ValueError, match="type a caption"):
        retrieve_images(model, "  ", shapes.images, tokenizer)


def test_caption_labels_mask_padding():
    labels = caption_labels({"input_ids": torch.tensor([[5, 6, 0, 0], [7, 8, 9, 0]]), "last": torch.tensor([1, 2])})
    assert labels.tolist() == [[5, 6, -100, -100], [7, 8, 9, -100]]


def test_stages_follow_the_guide_and_staged_history_spans_every_stage():
    assert Stages.like_guide(1100) == Stages(400, 400, 200, 100)
    tokenizer = zoo.course_tokenizer()
    digits = digit_images()
    train, test = split_pairs(digits, seed=0)
    model = DualEncoder(ConvEncoder(1, 8), TextEncoder(text_config(len(tokenizer))), dim=16)
    frozen_before = model.image_encoder.body[0].weight.clone()
    history = fit_staged(model, encode_pairs(train[:200], digits, tokenizer), encode_pairs(test[:64], digits, tokenizer),
                         Stages(2, 2, 2, 2), TrainConfig(steps=1, progress=False), batch_size=16)
    assert list(dict.fromkeys(history.stage)) == ["image", "text", "align", "joint"]
    assert history.step.tolist() == list(range(1, 9))
    assert not torch.equal(frozen_before, model.image_encoder.body[0].weight)  # trained in stage 1 and 4


def test_evaluating_only_at_the_end_ends_where_evaluating_along_the_way_ends():
    tokenizer = zoo.course_tokenizer()
    digits = digit_images()
    train, test = split_pairs(digits, seed=0)
    pairs, held_out = encode_pairs(train[:200], digits, tokenizer), encode_pairs(test[:64], digits, tokenizer)
    finals = []
    for eval_every in (2, 0):  # the chapter's end_only runs: their final held-out loss must not depend on it
        torch.manual_seed(0)
        model = DualEncoder(ConvEncoder(1, 8), TextEncoder(text_config(len(tokenizer))), dim=16)
        history = fit_clip(model, pairs, held_out, TrainConfig(steps=6, eval_every=eval_every, eval_batches=2,
                                                               progress=False), batch_size=16)
        finals.append((history.val_loss.dropna().tolist(), model.image_proj.weight.detach().clone()))
    (periodic, weights), (end_only, end_weights) = finals
    assert len(periodic) == 3 and len(end_only) == 1 and periodic[-1] == end_only[0]
    assert torch.equal(weights, end_weights)


def test_seeded_runs_time_training_and_scoring_apart():
    def run(config):
        time.sleep(0.02)
        return nn.Linear(1, 1), pd.DataFrame({"step": [1], "val_loss": [float(config.seed)]})

    def score(model):
        time.sleep(0.1)
        return {"R@1": 0.5}

    table, models, histories = seeded_runs({"a": run}, TrainConfig(steps=1), [0, 1], score)
    assert table.val_loss.tolist() == [0.0, 1.0] and set(models) == {"a"} and len(histories) == 2
    assert (table.score_seconds >= 0.1).all() and (table.seconds < 0.1).all()  # scoring is not counted as training
    with pytest.raises(ValueError, match="at least one variant and one seed"):
        seeded_runs({"a": run}, TrainConfig(steps=1), [], score)


def test_training_lifts_recall_well_above_chance():
    torch.manual_seed(0)
    tokenizer = zoo.course_tokenizer()
    digits = digit_images()
    train, test = split_pairs(digits, seed=0)
    model = DualEncoder(ConvEncoder(1, 8), TextEncoder(text_config(len(tokenizer))), dim=32)
    # 250 steps: at 150, seed 0's batch order left R@1 at 2.7 × chance; 250 clear both bars on seeds 0–3
    history = fit_clip(model, encode_pairs(train, digits, tokenizer), encode_pairs(test, digits, tokenizer),
                       TrainConfig(steps=250, lr=1e-3, eval_every=0, progress=False, seed=0), batch_size=64)
    assert history.val_loss.iloc[-1] < math.log(64) - 0.5, history.val_loss.iloc[-1]  # below chance (duplicates set a floor near 2)
    scores = retrieval_scores(model, test, digits, tokenizer).set_index(["direction", "k"])
    top1 = scores.loc[("text→image", 1)]
    assert top1.recall > 3 * top1.chance, scores


def test_fusion_scores_each_pair_as_if_alone():
    torch.manual_seed(0)
    model = FusionMatcher(TinyViT(3, 24, features=32), TextEncoder(text_config(60, hidden=32)), heads=2).eval()
    pixels, ids = torch.rand(3, 3, 24, 24), torch.randint(1, 60, (5, 7))
    last = torch.tensor([6, 3, 0, 5, 2])
    scores = model.pair_scores(pixels, ids, last)
    assert scores.shape == (3, 5)
    alone = torch.tensor([[model.pair_scores(pixels[i:i + 1], ids[c:c + 1], last[c:c + 1]).item() for c in range(5)]
                          for i in range(3)])
    assert torch.allclose(scores, alone, atol=1e-5)  # batching all pairs mixes no image or caption up
    assert torch.allclose(fused_similarity(model, pixels, ids, last, chunk=2), scores, atol=1e-5)  # chunked retrieval
    padded = ids.clone()
    padded[1, 4:] = 0  # tokens after `last` are padding: they must not change the score
    assert torch.allclose(model.pair_scores(pixels, padded, last), scores, atol=1e-5)
    with pytest.raises(ValueError, match="3 images but 5 captions"):
        model(pixels, ids, last)


def test_timed_alike_keeps_the_runs_clocked_the_same_way():
    """A last odd run alone on two threads is faster than the paired one-thread runs: it is left out of timings."""
    runs = pd.DataFrame({"variant": ["a", "a", "a", "b", "b"], "seconds": [10.0, 11.0, 6.5, 12.0, 12.5],
                         "threads": [1, 1, 2, 1, 1]})
    kept = timed_alike(runs)
    assert kept.seconds.tolist() == [10.0, 11.0, 12.0, 12.5]
    alone = runs.assign(threads=2)  # one worker: every run alike, all kept
    assert len(timed_alike(alone)) == len(runs)
