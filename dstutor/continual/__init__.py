"""Continual, online and private learning: forgetting measured on a task sequence, and what reduces it."""
