"""CLIP-style contrastive alignment (Radford et al. 2021, §2.3): a dual encoder, its loss and its metrics.

A batch of B matching image–caption pairs gives a B × B similarity matrix; the loss is cross-entropy
towards the diagonal in both directions. A model that knows nothing scores every pair alike, and
its loss is ln(B): the chance line every CLIP loss curve should be read against.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerFast

from dstutor.multimodal.data import tokenize_captions

NORMS = ("separate", "shared", "none")


def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image→text and text→image cross-entropy towards the matching pair."""
    if image_embeddings.shape != text_embeddings.shape:
        raise ValueError(f"image and caption embeddings must pair one to one; got {tuple(image_embeddings.shape)} "
                         f"images and {tuple(text_embeddings.shape)} captions")
    if len(image_embeddings) == 0:
        raise ValueError("empty batch: the contrastive loss needs at least one pair")
    return symmetric_cross_entropy(logit_scale * image_embeddings @ text_embeddings.T)


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean of row-wise (image→caption) and column-wise (caption→image) cross-entropy towards the diagonal."""
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


@dataclass
class ClipOutput:
    logits: torch.Tensor      # (images, captions) scaled similarities
    loss: torch.Tensor
    main_loss: torch.Tensor   # the same loss: what the Trainer's validation reads

    def logged(self) -> dict[str, torch.Tensor]:
        return {}


class DualEncoder(nn.Module):
    """Image and text towers, a linear projection each, an optional LayerNorm, and a learnable temperature.

    norm: "separate" gives each modality its own LayerNorm ([Hyper-parameters to regularisation §4.2]'s
    modality-specific normalisation), "shared" one for both, "none" neither. l2=False with a fixed
    temperature is [Training essentials §3.1]'s CLIPLoss, which never normalises the embeddings.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, dim: int = 64, norm: str = "separate",
                 l2: bool = True, temperature: float = 0.07, learn_temperature: bool = True):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.image_encoder, self.text_encoder, self.l2 = image_encoder, text_encoder, l2
        self.image_proj = nn.Linear(image_encoder.features, dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.features, dim, bias=False)
        shared = nn.LayerNorm(dim)
        self.image_norm = {"separate": nn.LayerNorm(dim), "shared": shared, "none": nn.Identity()}[norm]
        self.text_norm = {"separate": nn.LayerNorm(dim), "shared": shared, "none": nn.Identity()}[norm]
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learn_temperature)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.l2 else x

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._finish(self.image_norm(self.image_proj(self.image_encoder(pixels))))

    def embed_texts(self, input_ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return self._finish(self.text_norm(self.text_proj(self.text_encoder(input_ids, last))))

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), capped at 100 as in CLIP so the temperature cannot collapse."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, last: torch.Tensor, **_) -> ClipOutput:
        if len(pixels) != len(input_ids):
            raise ValueError(f"{len(pixels)} images but {len(input_ids)} captions: a batch pairs them one to one")
        images, texts = self.embed_images(pixels), self.embed_texts(input_ids, last)
        loss = clip_loss(images, texts, self.scale())
        return ClipOutput(self.scale() * images @ texts.T, loss, loss)


@torch.no_grad()
def embed(model: DualEncoder, pixels: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
          last: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """Embeddings of images (pixels) or captions (input_ids, last), in evaluation mode, batched."""
    model.eval()
    device = next(model.parameters()).device
    n = len(pixels) if pixels is not None else len(input_ids)
    chunks = [model.embed_images(pixels[i:i + batch_size].to(device)) if pixels is not None
              else model.embed_texts(input_ids[i:i + batch_size].to(device), last[i:i + batch_size].to(device))
              for i in range(0, n, batch_size)]
    return torch.cat(chunks).float().cpu()


def recall_at_k(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Share of queries (rows) with a relevant gallery item (column) among their k most similar."""
    if similarity.shape != relevant.shape or similarity.numel() == 0:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} must be "
                         "equal, non-empty (queries, gallery) matrices")
    order = similarity.argsort(dim=1, descending=True)
    hits = relevant.gather(1, order)
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def chance_recall(relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Expected recall@k of a random ranking: 1 − P(no relevant item among k drawn without replacement)."""
    gallery = relevant.shape[1]
    out = {}
    for k in ks:
        misses = [math.comb(gallery - int(r), k) / math.comb(gallery, k) for r in relevant.sum(1)]
        out[k] = 1 - float(np.mean(misses))
    return out


def class_embeddings(model: DualEncoder, class_captions: dict[str, list[str]], tokenizer: PreTrainedTokenizerFast,
                     max_len: int = 24) -> tuple[list[str], torch.Tensor]:
    """One embedding per class: the normalised mean of its captions' embeddings (CLIP's prompt ensemble)."""
    if not class_captions or not all(class_captions.values()):
        raise ValueError("every class needs at least one caption")
    names, rows = list(class_captions), []
    for name in names:
        ids, last = tokenize_captions(class_captions[name], tokenizer, max_len)
        rows.append(F.normalize(embed(model, input_ids=ids, last=last).mean(0), dim=-1))
    return names, torch.stack(rows)


def zero_shot_accuracy(model: DualEncoder, pixels: torch.Tensor, labels: Sequence[str],
                       class_captions: dict[str, list[str]], tokenizer: PreTrainedTokenizerFast) -> float:
    """Accuracy of labelling each image with the class whose captions it is most similar to."""
    if len(pixels) != len(labels):
        raise ValueError(f"{len(pixels)} images but {len(labels)} labels")
    names, classes = class_embeddings(model, class_captions, tokenizer)
    predicted = (embed(model, pixels=pixels) @ classes.T).argmax(1)
    return float(np.mean([names[p] == label for p, label in zip(predicted.tolist(), labels)]))


def retrieve_images(model: DualEncoder, query: str, gallery: torch.Tensor, tokenizer: PreTrainedTokenizerFast,
                    k: int = 5) -> tuple[list[int], list[float]]:
    """The k gallery images most similar to a typed caption: their indices and cosine similarities."""
    if not query.strip():
        raise ValueError("type a caption to search with")
    ids, last = tokenize_captions([query], tokenizer, 24)
    scores = (embed(model, pixels=gallery) @ embed(model, input_ids=ids, last=last).T).squeeze(1)
    top = scores.topk(min(k, len(scores)))
    return top.indices.tolist(), top.values.tolist()
