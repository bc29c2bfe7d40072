"""dstutor.data.tokenizer and packing: round-trips, special tokens, chat template, padding, leak-free split, loaders."""
import itertools

import datasets
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import BlockLoader, batch_stream, pack, split_by_document
from dstutor.data.tokenizer import pad_right, token_labels, train_tokenizer, until_end

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


def test_pad_right_cuts_pads_and_points_at_the_last_real_token(tokenizer):
    texts = ["床前明月光，疑是地上霜。", "a", TEXTS[0] * 3]
    ids, last = pad_right(texts, tokenizer, 12)
    plain = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert all(len(row) == 12 for row in ids)
    assert last == [min(len(p), 12) - 1 for p in plain] and last[2] == 11  # the long text is cut
    for row, p, end in zip(ids, plain, last):
        assert row[:end + 1] == p[:end + 1] and row[end + 1:] == [tokenizer.pad_token_id] * (11 - end)
    with pytest.raises(ValueError, match=r"text 1 \(''\) tokenises to nothing"):
        pad_right(["ok", ""], tokenizer, 8)
    with pytest.raises(ValueError, match="no texts"):
        pad_right([], tokenizer, 8)
    with pytest.raises(ValueError, match="max_len=0"):
        pad_right(["ok"], tokenizer, 0)


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
    batch = next(iter(BlockLoader(blocks, batch_size=4, shuffle=True)))
    assert batch.shape == (4, 16) and batch.dtype == torch.long


def test_block_loader_seeks_to_any_position_and_reshuffles_each_epoch():
    blocks = datasets.Dataset.from_dict({"input_ids": [[i] * 3 for i in range(10)]})
    loader = BlockLoader(blocks, batch_size=3, shuffle=True, seed=5)
    assert len(loader) == 3  # the partial last batch is dropped when shuffling
    walked = [b for epoch in range(3) for b in iter(loader)]  # epoch after epoch, as a DataLoader would
    assert all(torch.equal(a, b) for a, b in zip(walked, itertools.islice(loader.stream(0), 9)))
    assert all(torch.equal(a, b) for a, b in zip(walked[4:], itertools.islice(loader.stream(4), 5)))  # no replay
    epochs = [torch.cat(walked[i:i + 3])[:, 0].tolist() for i in (0, 3, 6)]
    assert len({tuple(e) for e in epochs}) == 3 and all(len(set(e)) == 9 for e in epochs)
    in_order = BlockLoader(blocks, batch_size=4, shuffle=False)
    assert [b[:, 0].tolist() for b in in_order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b[:, 0].tolist() for b in in_order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # every epoch alike
    with pytest.raises(ValueError, match="batch_size=20 with 10 rows"):
        BlockLoader(blocks, batch_size=20, shuffle=True)


def pairs(n=10):
    """The same rows as a dict of tensors and as an Arrow Dataset."""
    tensors = {"pixels": torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2),
               "input_ids": torch.arange(n)[:, None], "last": torch.zeros(n, dtype=torch.long)}
    return tensors, datasets.Dataset.from_dict({k: t.tolist() for k, t in tensors.items()})


def ids_of(batches) -> list[list[int]]:
    return [b["input_ids"].flatten().tolist() for b in batches]


def test_block_loader_reads_a_dataset_and_a_dict_of_tensors_alike():
    tensors, dataset = pairs()
    fields = ("pixels", "input_ids")
    for shuffle in (True, False):
        loaders = [BlockLoader(data, 3, shuffle=shuffle, seed=7, fields=fields) for data in (tensors, dataset)]
        walked = [[b for _ in range(2) for b in loader] for loader in loaders]
        streamed = [list(itertools.islice(loader.stream(4), 5)) for loader in loaders]
        for a, b in [*zip(*walked, strict=True), *zip(*streamed, strict=True)]:
            assert list(a) == list(b) == list(fields)
            assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in fields)
        assert len(loaders[0]) == len(loaders[1]) == (3 if shuffle else 4)
    plain = [BlockLoader(data, 4, shuffle=True, seed=2) for data in (tensors, dataset)]  # no fields: input_ids alone
    assert all(torch.equal(a, b) for a, b in zip(*plain, strict=True))


def test_block_loader_over_tensors_is_seeded_resumable_and_reshuffled_every_epoch():
    tensors, _ = pairs()
    loader = BlockLoader(tensors, 3, shuffle=True, seed=7, fields=tuple(tensors))
    passes = [ids_of(loader) for _ in range(3)]
    assert len({str(p) for p in passes}) == 3  # iterating again gives the next epoch, not epoch 0 replayed
    assert all(len(b) == 3 for p in passes for b in p)
    assert all(len(set(sum(p, []))) == 9 for p in passes)  # one epoch: no row twice (the 10th is dropped)
    endless = ids_of(itertools.islice(loader.stream(0), 9))
    assert endless == sum(passes, [])
    assert ids_of(itertools.islice(loader.stream(5), 4)) == endless[5:]  # exact resume, no replay
    assert ids_of(itertools.islice(batch_stream(loader, 5), 4)) == endless[5:]  # as the Trainer resumes
    again = BlockLoader(tensors, 3, shuffle=True, seed=7, fields=tuple(tensors))
    assert ids_of(again) == passes[0]  # a fresh loader's first pass: a fixed validation set
    other = BlockLoader(tensors, 3, shuffle=True, seed=8, fields=tuple(tensors))
    assert [ids_of(other) for _ in range(3)] != passes


def test_block_loader_with_groups_keeps_each_batch_free_of_repeats_while_rows_allow():
    groups = torch.arange(40) % 10  # 10 groups of 4 rows
    data = {"input_ids": torch.arange(40)[:, None]}
    loader = BlockLoader(data, 8, shuffle=True, seed=3, groups=groups)
    for epoch in range(3):
        order = loader.order(epoch)
        assert sorted(order.tolist()) == list(range(40))  # every row once per epoch
        batches = [groups[order[i * 8:(i + 1) * 8]].tolist() for i in range(len(loader))]
        assert all(len(set(batch)) == 8 for batch in batches[:4])  # 5 batches of 8 from 10 groups × 4 rows
    plain = BlockLoader(data, 8, shuffle=True, seed=3)
    assert any(len(set(groups[plain.order(0)[i * 8:(i + 1) * 8]].tolist())) < 8 for i in range(5))
    assert torch.equal(loader.order(1), BlockLoader(data, 8, shuffle=True, seed=3, groups=groups).order(1))  # seekable
    crowded = BlockLoader(data, 16, shuffle=True, seed=3, groups=groups)  # 16 > 10 groups: repeats are unavoidable
    assert all(len(set(groups[crowded.order(0)[i * 16:(i + 1) * 16]].tolist())) == 10 for i in range(2))
    with pytest.raises(ValueError, match="groups has 39 ids for 40 rows"):
        BlockLoader(data, 8, shuffle=True, groups=groups[:39])


def test_block_loader_transform_maps_every_batch_in_iteration_and_stream():
    tensors, dataset = pairs()

    def first_column(batch):
        return {**batch, "pixels": batch["pixels"][:, :1]}

    for data in (tensors, dataset):
        plain = BlockLoader(data, 4, shuffle=True, seed=3, fields=("pixels", "input_ids"))
        mapped = BlockLoader(data, 4, shuffle=True, seed=3, fields=("pixels", "input_ids"), transform=first_column)
        assert len(mapped) == len(plain) == 2
        for ours, theirs in [*zip(plain, mapped, strict=True), *zip(plain.stream(3), itertools.islice(mapped.stream(3), 3))]:
            assert ours["pixels"].shape == (4, 2) and theirs["pixels"].shape == (4, 1)
            assert torch.equal(theirs["pixels"], ours["pixels"][:, :1])
            assert torch.equal(theirs["input_ids"], ours["input_ids"])


def test_block_loader_errors_name_the_bad_value():
    tensors, dataset = pairs()
    with pytest.raises(ValueError, match=r"unequal length: \{'pixels': 3, 'input_ids': 2\}"):
        BlockLoader({"pixels": torch.zeros(3, 1), "input_ids": torch.zeros(2, 1)}, 2, shuffle=True)
    for data in (tensors, dataset):
        with pytest.raises(ValueError, match="batch_size=11 with 10 rows"):
            BlockLoader(data, 11, shuffle=True)
        with pytest.raises(ValueError, match="batch_size=0 with 10 rows"):
            BlockLoader(data, 0, shuffle=False)
        with pytest.raises(ValueError, match=r"fields \['labels'\] are not columns of the data \['pixels', 'input_ids', "):
            BlockLoader(data, 2, shuffle=False, fields=("input_ids", "labels"))
        assert len(BlockLoader(data, 11, shuffle=False)) == 1  # unshuffled: one partial batch is fine
    with pytest.raises(ValueError, match=r"fields \['input_ids'\] are not columns .*fields="):
        BlockLoader({"pixels": torch.zeros(3, 1)}, 2, shuffle=False)
    with pytest.raises(ValueError, match="with 0 rows"):
        BlockLoader({}, 1, shuffle=False)


@pytest.mark.parametrize("ids, expected", [([5, 6, 1, 7, 1], [5, 6]), ([5, 6], [5, 6]), ([1, 5], []), ([], [])])
def test_a_reply_ends_before_its_first_end_token(ids, expected):
    assert until_end(ids, 1) == expected
