"""dstutor.data.clean / dedup / augment / mixing, and the bad inputs of issue 4."""
import random

import datasets
import pytest
import torch

from dstutor.data import augment, clean, dedup, mixing


def rows(texts):
    return datasets.Dataset.from_list([{"text": t, "doc_id": str(i)} for i, t in enumerate(texts)])


def test_report_adds_up_and_names_rules():
    texts = ["短", "这是一条足够长的中文评论，内容正常。", "!!!!!!!!!!!!!!!!!!!!!!!!", "English only text here, long enough.",
             "重复行\n重复行\n重复行\n重复行\n重复行", "另一条正常的评论，写得很好，我很喜欢。"]
    kept, report = clean.clean_corpus(rows(texts), clean.CleanConfig(language="zh", min_chars=5))
    outcomes = report["rows"]
    assert outcomes["rows in"] == len(texts) == outcomes["kept"] + sum(
        outcomes[r] for r in ("too_short", "symbols", "language", "repetition"))
    assert outcomes["kept"] == len(kept) == 2


def test_empty_corpus_and_everything_filtered_are_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        clean.clean_corpus(rows([]))
    with pytest.raises(ValueError, match="every row was filtered out.*too_short"):
        clean.clean_corpus(rows(["a", "b"]), clean.CleanConfig(min_chars=5))


def test_fullwidth_punctuation_survives_by_default():
    text = "你好，世界！（全角）ＡＢＣ"
    assert clean.transform(text, clean.CleanConfig()) == text
    assert clean.transform(text, clean.CleanConfig(fold_fullwidth=True)) == "你好,世界!(全角)ABC"


def test_mixed_newlines_and_control_characters():
    assert clean.transform("a\r\nb\rc\nd\x00\x07e", clean.CleanConfig()) == "a\nb\nc\nde"


def test_invalid_utf8_is_counted_not_lost():
    text, invalid = clean.decode_utf8("好".encode() + b"\xff\xfe" + "ok".encode() + "\ufffd".encode())
    assert invalid == 2 and text.startswith("好") and text.endswith("ok\ufffd")


def test_ten_megabyte_line_is_dropped_and_reported():
    huge = "x" * 10_000_000
    kept, report = clean.clean_corpus(rows([huge, "a normal line of text"]), clean.CleanConfig(max_chars=1_000_000))
    assert report.loc["too_long", "rows"] == 1 and kept["text"] == ["a normal line of text"]


def test_alnum_han_whitelist_deletes_punctuation():
    config = clean.CleanConfig(whitelist=clean.ALNUM_HAN_WHITELIST, strip_boilerplate=False)
    assert clean.transform("你好，world! 123。", config) == "你好world123"


def test_jieba_stats():
    stats = clean.jieba_stats(["我喜欢这本书", "这本书的内容很好"])
    assert stats["texts"] == 2 and stats["vocabulary"] >= 5 and 0 < stats["stopword_share"] < 1


def test_exact_dedup_folds_case_width_and_spaces():
    result = dedup.dedup_exact(["Hello  World", "hello world", "ＨＥＬＬＯ world", "other"])
    assert result.keep == [True, False, False, True] and result.pairs == {(0, 1), (0, 2)}


def test_minhash_finds_planted_copies_and_measures_itself():
    rng = random.Random(0)
    base = ["".join(rng.choice("abcdefghij ") for _ in range(200)) for _ in range(100)]
    texts, truth = dedup.plant_duplicates(base, 20, edit_rate=0.01, seed=1)
    result = dedup.dedup_minhash(texts, threshold=0.7)
    precision, recall = dedup.precision_recall(result.pairs, truth)
    assert precision == 1.0 and recall >= 0.9 and result.removed >= 18  # LSH banding is probabilistic
    loose, _ = dedup.plant_duplicates(base, 20, edit_rate=0.5, seed=1)
    assert dedup.precision_recall(dedup.dedup_minhash(loose, threshold=0.9).pairs, truth)[1] < 0.5


def test_precision_recall_counts_copies_of_one_source_as_right():
    truth = {(0, 3), (0, 4)}
    assert dedup.precision_recall({(3, 4)}, truth) == (1.0, 0.0)  # right pair, but neither joins its source
    assert dedup.precision_recall({(0, 3), (3, 4)}, truth) == (1.0, 1.0)  # copy 4 reaches 0 through 3
    assert dedup.precision_recall({(1, 3)}, truth) == (0.0, 0.0)


def test_embedding_dedup_uses_the_guides_corrcoef_which_is_the_centred_cosine():
    import numpy as np
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 8))
    vectors[3] = vectors[0] + 5.0  # the same direction after centring, a different one before
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    assert np.allclose(np.corrcoef(vectors), unit @ unit.T)
    assert dedup.dedup_embedding(["a"] * 4, 0.99, vectors).pairs == {(0, 3)}
    assert dedup.dedup_embedding(["a"] * 4, 0.99, vectors, similarity="cosine").pairs == set()
    with pytest.raises(ValueError, match="'corrcoef' or 'cosine'"):
        dedup.dedup_embedding(["a"] * 4, 0.99, vectors, similarity="dot")


def test_minhash_threshold_is_validated():
    with pytest.raises(ValueError, match="threshold=1.5"):
        dedup.dedup_minhash(["a"], threshold=1.5)


def test_eda_with_synonyms_is_deterministic():
    synonyms = {"很好": ["不错"], "喜欢": ["喜爱"]}
    text = "这本书很好，我很喜欢"
    first = augment.eda(text, alpha=0.5, seed=3, synonyms=synonyms)
    assert first == augment.eda(text, alpha=0.5, seed=3, synonyms=synonyms)
    assert "不错" in first["synonym replace"] or "喜爱" in first["synonym replace"]
    assert sorted(first["random swap"]) == sorted(text)  # same characters, other order


def test_cilin_synonyms_are_loaded():
    table = augment.cilin_synonyms()
    assert "人民" in table["公民"] and len(table) > 10_000


def test_back_translation_plumbing_and_errors():
    def fake(texts, source, target):  # a stand-in translator that tags the language
        return [f"{t}|{target}" for t in texts]

    assert augment.back_translate(["你好"], fake, "zh", "de") == ["你好|de|zh"]
    with pytest.raises(ValueError, match="returned 0 / 0 texts for 1 inputs"):
        augment.back_translate(["x"], lambda texts, s, t: [], "zh", "de")


def blocks(n, value):
    return datasets.Dataset.from_dict({"input_ids": [[value] * 4 for _ in range(n)]})


def test_mixer_follows_weights_and_is_deterministic():
    domains = {"a": blocks(50, 0), "b": blocks(50, 1), "c": blocks(5, 2)}

    def draw(seed):
        mixer = mixing.DomainMixer(domains, {"a": 6, "b": 3, "c": 1}, seed=seed)
        stream = mixer.batches(20)
        return torch.cat([next(stream) for _ in range(100)]), mixer.drawn

    ids, drawn = draw(0)
    share = {d: n / 2000 for d, n in drawn.items()}
    assert abs(share["a"] - 0.6) < 0.04 and abs(share["c"] - 0.1) < 0.03
    assert torch.equal(ids, draw(0)[0]) and not torch.equal(ids, draw(1)[0])


def test_reweight_moves_weight_to_harder_domains_with_a_floor():
    new = mixing.reweight({"a": 0.5, "b": 0.5}, {"a": 5.0, "b": 1.0}, step_size=2.0, floor=0.05)
    assert new["a"] > 0.9 and new["b"] >= 0.05 and abs(sum(new.values()) - 1) < 1e-9


@pytest.mark.parametrize("weights, match", [({"a": -1, "b": 1}, "finite"), ({"a": 0, "b": 0}, "not all 0"),
                                            ({"a": 1}, "mismatched")])
def test_mixer_rejects_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        mixing.DomainMixer({"a": blocks(2, 0), "b": blocks(2, 1)}, weights)
