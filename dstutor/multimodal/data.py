"""Image–caption pairs that need no download: scikit-learn's digits and coloured shapes drawn by code.

Every image has facts (its digit, or shape/colour/size/position); captions state them through
templates in English and Chinese. Held-out pairs use held-out images *and* held-out templates, so a
model cannot pass by remembering a picture or a phrasing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from transformers import PreTrainedTokenizerFast

from dstutor.data.tokenizer import pad_right

DIGITS_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS_ZH = "零一二三四五六七八九"
# Training templates put the digit at the end and in the middle: a held-out phrasing may do either.
DIGIT_TEMPLATES = ["a handwritten {word}", "the digit {digit}, written by hand", "a picture of the number {word}",
                   "手写数字{zh}", "{zh},一个手写的数字", "图片里是数字{zh}"]

SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLOURS = {"red": ("红色", (0.9, 0.1, 0.1)), "green": ("绿色", (0.1, 0.75, 0.2)),
           "blue": ("蓝色", (0.15, 0.3, 0.95)), "yellow": ("黄色", (0.95, 0.85, 0.1))}
SIZES = {"small": ("小", 0.15), "large": ("大", 0.24)}  # radius as a share of the image side
POSITIONS = {"top left": ("左上角", (0.27, 0.27)), "top right": ("右上角", (0.27, 0.73)),
             "bottom left": ("左下角", (0.73, 0.27)), "bottom right": ("右下角", (0.73, 0.73))}
SHAPE_TEMPLATES = ["a {size} {colour} {shape} at the {position}", "there is a {colour} {shape}, {size}, {position}",
                   "a picture with a {size} {colour} {shape} in the {position} corner",
                   "{position_zh}有一个{size_zh}{colour_zh}{shape_zh}", "一个{colour_zh}的{size_zh}{shape_zh},在{position_zh}",
                   "图片{position_zh}是{size_zh}{colour_zh}{shape_zh}"]


@dataclass
class ImageSet:
    """Images (n, channels, height, width) in [0, 1], one row of facts per image, and caption templates."""

    name: str
    images: torch.Tensor
    facts: pd.DataFrame     # the columns the templates name (English values; `_zh` variants are derived)
    templates: list[str]

    def caption(self, image: int, template: int) -> str:
        """Image `image` described by template number `template`."""
        return self.templates[template].format(**_fields(self.facts.iloc[image]))

    def content(self, image: int) -> str:
        """What every caption of this image states, as one key (equal keys: interchangeable captions)."""
        return " ".join(str(v) for v in self.facts.iloc[image].values)

    def captions_by(self, attribute: str, templates: list[int]) -> dict[str, list[str]]:
        """For each value of one fact (e.g. colour), the captions of every distinct image having it."""
        if attribute not in self.facts:
            raise ValueError(f"{self.name} images have no fact {attribute!r}; they have {list(self.facts)}")
        distinct = self.facts.drop_duplicates()
        return {str(value): [self.templates[t].format(**_fields(row)) for _, row in group.iterrows() for t in templates]
                for value, group in distinct.groupby(attribute)}


def _fields(row: pd.Series) -> dict:
    if "digit" in row:
        d = int(row["digit"])
        return {"digit": d, "word": DIGITS_EN[d], "zh": DIGITS_ZH[d]}
    return {**row.to_dict(), "shape_zh": SHAPES[row["shape"]], "colour_zh": COLOURS[row["colour"]][0],
            "size_zh": SIZES[row["size"]][0], "position_zh": POSITIONS[row["position"]][0]}


def digit_images() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits (8 × 8, one channel), shipped inside the package."""
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return ImageSet("digits", images, pd.DataFrame({"digit": digits.target}), DIGIT_TEMPLATES)


def shape_images(n: int, size: int = 24, seed: int = 0) -> ImageSet:
    """n coloured shapes on a grey background, drawn by code; position and radius jitter by seed."""
    rng = np.random.default_rng(seed)
    facts = pd.DataFrame({"size": rng.choice(list(SIZES), n), "colour": rng.choice(list(COLOURS), n),
                          "shape": rng.choice(list(SHAPES), n), "position": rng.choice(list(POSITIONS), n)})
    rows, cols = np.mgrid[0:size, 0:size] / size
    images = np.full((n, 3, size, size), 0.5, dtype=np.float32)
    for i, fact in enumerate(facts.itertuples()):
        radius = SIZES[fact.size][1] * rng.uniform(0.9, 1.0)
        cy, cx = np.array(POSITIONS[fact.position][1]) + rng.uniform(-0.06, 0.06, 2)
        dy, dx = rows - cy, cols - cx
        mask = {"circle": dy ** 2 + dx ** 2 <= radius ** 2,
                "square": (abs(dy) <= radius * 0.85) & (abs(dx) <= radius * 0.85),
                "triangle": (dy <= radius * 0.8) & (abs(dx) <= (dy + radius) * 0.6)}[fact.shape]
        images[i][:, mask] = np.array(COLOURS[fact.colour][1], dtype=np.float32)[:, None]
    return ImageSet("shapes", torch.from_numpy(images), facts, SHAPE_TEMPLATES)


def split_pairs(images: ImageSet, test_share: float = 0.2, test_templates: tuple[int, ...] = (2, 5),
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) pairs: train images × the other templates, held-out images × the held-out templates."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must lie in (0, 1), got {test_share}")
    bad = [t for t in test_templates if not 0 <= t < len(images.templates)]
    if bad or len(set(test_templates)) >= len(images.templates):
        raise ValueError(f"test_templates {test_templates} must name some, not all, of the "
                         f"{len(images.templates)} templates")
    order = np.random.default_rng(seed).permutation(len(images.images))
    n_test = max(1, int(len(order) * test_share))
    train_templates = [t for t in range(len(images.templates)) if t not in test_templates]

    def pairs(image_ids, templates) -> pd.DataFrame:
        return pd.DataFrame([{"image": int(i), "template": t, "caption": images.caption(i, t),
                              "content": images.content(i)} for i in sorted(image_ids) for t in templates])
    return pairs(order[n_test:], train_templates), pairs(order[:n_test], list(test_templates))


def tokenize_captions(captions: list[str], tokenizer: PreTrainedTokenizerFast,
                      max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids right-padded to max_len (batch, max_len) and the index of each caption's last token."""
    ids, last = pad_right(captions, tokenizer, max_len)
    return torch.tensor(ids), torch.tensor(last)


def encode_pairs(pairs: pd.DataFrame, images: ImageSet, tokenizer: PreTrainedTokenizerFast,
                 max_len: int = 24) -> dict[str, torch.Tensor]:
    """The tensors a dual encoder reads: pixels, input_ids and last, one row per pair."""
    if pairs.empty:
        raise ValueError("no pairs to encode")
    input_ids, last = tokenize_captions(list(pairs.caption), tokenizer, max_len)
    return {"pixels": images.images[torch.tensor(pairs.image.values)], "input_ids": input_ids, "last": last}
