"""Evaluation: the course's suite of tasks, probes of robustness and bias, scoring and the lm-eval harness.

The metrics themselves live in `dstutor.metrics`.
"""
