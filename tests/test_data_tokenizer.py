"""dstutor.data.tokenizer and packing: exact round-trips, special tokens, chat template, leak-free split."""
import itertools

import datasets
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import block_loader, pack, split_by_document
from dstutor.data.tokenizer import token_labels, train_tokenizer

TEXTS = ["To be, or not to be: that is the question.", "这本书写得很好，我很喜欢！「好」。",
         "def f(x):\n\treturn x ** 2  # square\r\n", "床前明月光，疑是地上霜。", "emoji 🙂 and ｆｕｌｌ-width ＡＢＣ"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400, min_frequency=1)


@pytest.mark.parametrize("text", sorted(set(TEXTS)) + ["unseen: Ωμέγα ñandú ✓\x00\x7f", "", "  lead/trail  "])
def test_exact_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_special_tokens_and_chat_template(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|user|>你好<|eos|><|assistant|>"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|user|>") and tokenizer.eos_token_id in ids


def test_save_and_load(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert again(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]
    assert again.chat_template == tokenizer.chat_template


def test_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_tokenizer(TEXTS, vocab_size=100)


def test_token_labels_are_readable(tokenizer):
    labels = token_labels(tokenizer, tokenizer("a b\nc", add_special_tokens=False)["input_ids"])
    assert "".join(labels).replace("␣", " ").replace("⏎", "\n") == "a b\nc"


def corpus(n=60):
    return datasets.Dataset.from_list([{"text": TEXTS[i % 5] + f" {i}", "doc_id": f"d{i}", "source": "t"}
                                       for i in range(n)])


def test_split_by_document_is_deterministic_and_disjoint():
    train, val = split_by_document(corpus(), 0.25)
    assert len(train) + len(val) == 60 and 0 < len(val) < 30
    assert not set(train["doc_id"]) & set(val["doc_id"])
    assert split_by_document(corpus(), 0.25)[1]["doc_id"] == val["doc_id"]
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        split_by_document(corpus(), 1.5)


def test_pack_makes_full_blocks_with_eos(tokenizer):
    data = corpus()
    blocks = pack(data, tokenizer, block_size=16)
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in data["text"])
    assert all(len(b) == 16 for b in blocks["input_ids"])
    assert total - 16 * len(blocks) < 16 * 1  # one map batch here: at most one partial block dropped
    assert sum(b.count(tokenizer.eos_token_id) for b in blocks["input_ids"]) >= len(data) - 1
    batch = next(iter(block_loader(blocks, batch_size=4, shuffle=True)))
    assert batch.shape == (4, 16) and batch.dtype == torch.long


def test_block_loader_seeks_to_any_position_and_reshuffles_each_epoch():
    blocks = datasets.Dataset.from_dict({"input_ids": [[i] * 3 for i in range(10)]})
    loader = block_loader(blocks, batch_size=3, shuffle=True, seed=5)
    assert len(loader) == 3  # the partial last batch is dropped when shuffling
    walked = [b for epoch in range(3) for b in iter(loader)]  # epoch after epoch, as a DataLoader would
    assert all(torch.equal(a, b) for a, b in zip(walked, itertools.islice(loader.stream(0), 9)))
    assert all(torch.equal(a, b) for a, b in zip(walked[4:], itertools.islice(loader.stream(4), 5)))  # no replay
    epochs = [torch.cat(walked[i:i + 3])[:, 0].tolist() for i in (0, 3, 6)]
    assert len({tuple(e) for e in epochs}) == 3 and all(len(set(e)) == 9 for e in epochs)
    in_order = block_loader(blocks, batch_size=4, shuffle=False)
    assert [b[:, 0].tolist() for b in in_order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="batch_size=20 with 10 blocks"):
        block_loader(blocks, batch_size=20, shuffle=True)
