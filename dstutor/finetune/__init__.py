"""Fine-tuning the course's pretrained model: freezing, LoRA (peft), classification heads, SFT data."""
from dstutor.finetune.classify import (LastTokenClassifier, classification_scores, confusion, encode_classification,
                                       predict_proba, pseudo_labelled, sentiment_splits, tfidf_baseline)
from dstutor.finetune.freezing import freeze, trainable_summary, training_step_cost
from dstutor.finetune.lora import LORA_TARGETS, adapted_weights, add_lora, save_merged_for_transformers
from dstutor.finetune.methods import Method, compare_methods, finetune, general_loss, language_model_of, method_costs
from dstutor.finetune.multitask import MultiTaskModel, paired_tasks
from dstutor.finetune.sft import (answer, answer_loss, answers, encode_sft, idiom_instructions, sampling_repetition,
                                  sft_example, split_by_idiom)

__all__ = ["LastTokenClassifier", "classification_scores", "confusion", "encode_classification", "predict_proba",
           "pseudo_labelled", "sentiment_splits", "tfidf_baseline", "freeze", "trainable_summary",
           "training_step_cost", "LORA_TARGETS", "adapted_weights", "add_lora", "save_merged_for_transformers",
           "Method", "compare_methods", "finetune", "general_loss", "language_model_of", "method_costs", "MultiTaskModel", "paired_tasks", "answer", "answer_loss", "answers",
           "encode_sft", "idiom_instructions", "sampling_repetition", "sft_example", "split_by_idiom"]
