"""Evaluation helpers: measures of generated text."""
from dstutor.evaluate.generation import repeated_ngram_fraction

__all__ = ["repeated_ngram_fraction"]
