"""Dropout, LayerDrop (a dropped layer passes its input through) and the config checks behind them."""
import pytest
import torch

from test_trainer import pattern_batches, tiny_model

from dstutor.models import DeepSeekConfig


def test_dropout_is_random_in_training_and_off_in_evaluation():
    model, ids = tiny_model(dropout=0.3), pattern_batches(1)[0]
    reference = tiny_model()  # same seed, same weights, no dropout
    model.eval()
    assert torch.equal(model(ids).logits, reference.eval()(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_layer_drop_skips_whole_layers_as_identity():
    model, ids = tiny_model(layer_drop=0.5), pattern_batches(1)[0]
    calls = []
    for index, layer in enumerate(model.model.layers):
        layer.register_forward_hook(lambda module, args, out, index=index: calls.append(index))
    model.train()
    torch.manual_seed(0)
    for _ in range(20):
        model(ids)
    per_layer = [calls.count(i) for i in range(len(model.model.layers))]
    assert all(3 <= n <= 17 for n in per_layer), per_layer  # each layer ran about half the time
    # With every layer dropped, the residual stream reaching the head is the embedding itself.
    always = tiny_model(layer_drop=0.999999).train()
    expected = always.lm_head(always.model.norm(always.model.embed_tokens(ids)))
    assert torch.allclose(always(ids).logits, expected)
    assert len(calls) == sum(per_layer)


@pytest.mark.parametrize("field", ["dropout", "layer_drop"])
def test_probabilities_are_checked(field):
    with pytest.raises(ValueError, match=f"{field}=1.0.*probability"):
        DeepSeekConfig.preset("nano", **{field: 1.0})


def test_zeroing_layer_drop_erases_the_residual_stream():
    from dstutor.train.regularization import zeroing_layer_drop

    model, ids = tiny_model(), pattern_batches(1)[0]
    zeroing_layer_drop(model, [1], drop_prob=0.999999)
    model.train()
    head_only = model.lm_head(model.model.norm(torch.zeros(*ids.shape, model.config.hidden_size)))
    assert torch.allclose(model(ids).logits, head_only)  # the last layer dropped: nothing of the input is left
    assert not torch.allclose(model.eval()(ids).logits, head_only)  # evaluation is unaffected


def test_mean_over_classes_label_smoothing_is_our_loss_divided_by_the_vocabulary():
    import torch.nn.functional as F

    from dstutor.train.regularization import label_smoothing_mean_over_classes

    logits, targets = torch.randn(32, 50), torch.randint(0, 50, (32,))
    ours = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert label_smoothing_mean_over_classes(logits, targets, 0.1).item() == pytest.approx(ours.item() / 50, rel=1e-5)


def test_repeated_ngram_fraction():
    from dstutor.metrics import repeated_ngram_fraction

    assert repeated_ngram_fraction([1, 2, 3, 4, 5], n=2) == 0
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="at least n=4"):
        repeated_ngram_fraction([1, 2], n=4)
