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
