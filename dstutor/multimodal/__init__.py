"""Image–text alignment, CLIP-style: offline data, the two towers, the loss, staged training, retrieval."""
from dstutor.multimodal.clip import (DualEncoder, chance_recall, class_embeddings, clip_loss, embed, recall_at_k,
                                     retrieve_images, zero_shot_accuracy)
from dstutor.multimodal.data import ImageSet, digit_images, encode_pairs, shape_images, split_pairs, tokenize_captions
from dstutor.multimodal.encoders import ConvEncoder, TextEncoder, TinyViT, check_images, text_config
from dstutor.multimodal.fusion import FusionMatcher
from dstutor.multimodal.training import (Stages, fit_clip, fit_staged, retrieval_scores, seeded_runs,
                                        timed_alike)

__all__ = ["ConvEncoder", "DualEncoder", "FusionMatcher", "ImageSet", "Stages", "TextEncoder", "TinyViT",
           "chance_recall", "check_images", "class_embeddings", "clip_loss", "digit_images", "embed", "encode_pairs",
           "fit_clip", "fit_staged", "recall_at_k", "retrieval_scores", "retrieve_images", "shape_images",
           "seeded_runs", "split_pairs", "text_config", "timed_alike", "tokenize_captions", "zero_shot_accuracy"]
