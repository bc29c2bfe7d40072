"""Rule-based rewards (DeepSeek-R1 §2.2.2): is the answer right, and is the reply in the required format.

Rules, not a learned reward model: R1 avoids neural rewards in reasoning RL because the policy learns
to exploit them. A rule can still be gamed if it is loose, so the format is strict: exactly one think
block, then exactly one answer block, then nothing (an answer outside the tags earns nothing).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter

from dstutor.rl.tasks import Problem

FORMAT = re.compile(r"<think>((?:(?!</?think>|</?answer>).)*)</think><answer>((?:(?!</?think>|</?answer>).)*)</answer>",
                    re.DOTALL)


def extract_answer(completion: str) -> str | None:
    """The answer text when the whole completion is `<think>…</think><answer>…</answer>`, else None."""
    match = FORMAT.fullmatch(completion.strip())
    return match.group(2).strip() if match else None


def format_reward(completion: str) -> float:
    """1.0 for exactly one think block followed by exactly one answer block and nothing else, 0.0 otherwise."""
    return float(extract_answer(completion) is not None)


BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_expression(text: str) -> tuple[float, list[int]]:
    """Value of an arithmetic expression of integers, + - * / and brackets, and the integers it uses.

    Anything else (names, calls, powers, unary minus, floats) raises ValueError: the answer is parsed,
    never passed to eval().
    """
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"not an expression: {text!r}") from error
    used: list[int] = []

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError(f"division by zero in {text!r}")
            return BINARY[type(node.op)](left, right)
        raise ValueError(f"only integers, + - * / and brackets are allowed, found {type(node).__name__} in {text!r}")

    return value(tree), used


def is_correct(answer: str | None, problem: Problem) -> bool:
    """Addition: the number equals the target. Countdown: the expression uses each given number once and hits it."""
    if answer is None:
        return False
    if problem.task == "addition":
        return answer.isdigit() and int(answer) == int(problem.target)
    try:
        result, used = evaluate_expression(answer)
    except ValueError:
        return False
    return Counter(used) == Counter(problem.numbers) and math.isclose(result, int(problem.target))


def accuracy_reward(completion: str, problem: Problem) -> float:
    """1.0 when the formatted answer is correct, 0.0 otherwise (also for a right number outside the tags)."""
    return float(is_correct(extract_answer(completion), problem))


def total_reward(completion: str, problem: Problem, format_weight: float = 0.1) -> float:
    """Accuracy plus a small bonus for the format: correctness dominates, the format is learned first."""
    return accuracy_reward(completion, problem) + format_weight * format_reward(completion)
