"""dstutor.timing: variants take turns, warm-up rounds are not kept, decoding is timed without the prefill."""
import time

import pytest
import torch
from test_trainer import pattern_batches, tiny_model

from dstutor.timing import decode_rate, interleaved_seconds, train_step_seconds


def test_variants_take_turns_and_warmup_rounds_are_not_kept():
    calls = []
    seconds = interleaved_seconds({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, 4,
                                  warmup=1)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    assert [len(times) for times in seconds.values()] == [3, 3]
    with pytest.raises(ValueError, match="rounds=1 must exceed warmup=1"):
        interleaved_seconds({"a": lambda i: None}, 1)


def test_decode_rate_leaves_the_prefill_out():
    def generate(tokens: int) -> None:  # a 50 ms prefill, then 10 ms per further token
        time.sleep(0.05 + 0.01 * (tokens - 1))

    assert decode_rate(generate, 6, repeats=3) == pytest.approx(100, rel=0.3)
    with pytest.raises(ValueError, match="new_tokens=1"):
        decode_rate(generate, 1)


def test_train_step_seconds_times_every_step_after_warmup_and_trains_each_model():
    models = {"a": tiny_model(0), "b": tiny_model(1)}
    before = {name: model.lm_head.weight.clone() for name, model in models.items()}
    seconds = train_step_seconds(models, pattern_batches(3), warmup=1)
    assert {name: len(times) for name, times in seconds.items()} == {"a": 2, "b": 2}
    assert all(t > 0 for times in seconds.values() for t in times)
    assert all(not torch.equal(models[name].lm_head.weight, before[name]) for name in models)
