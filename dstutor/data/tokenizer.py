"""A byte-level BPE tokenizer trained with `tokenizers`, wrapped for transformers, with a chat template.

Byte-level means every string (Chinese, English, code, emoji, stray bytes) encodes and decodes back
exactly; no Unicode normaliser is applied because NFKC folds full-width CJK punctuation (，→ ,).
"""
from __future__ import annotations

from collections.abc import Iterable

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


def token_labels(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> list[str]:
    """Readable label per token: its text with spaces as ␣ (a token holding part of a character shows �)."""
    return [tokenizer.decode([i]).replace(" ", "␣").replace("\n", "⏎") or "∅" for i in ids]
