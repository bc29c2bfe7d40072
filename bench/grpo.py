"""GRPO on this CPU for a fixed wall-clock budget: s per step, rollout tokens/s and held-out pass@1 against time.

Starts from chapter 09's SFT model for seed 0 (loaded from the zoo, built once) on the chapter's
problems and policy. Ten minutes is ~10-20× the chapter's 60 steps, so the recipe here is one that holds
its gain that long: the learning rate decays by a cosine over the run (issue 26's run at a constant rate
peaked at 0.503, then swung between 0.43 and 0.49), no KL anchor (β = 0, no reference model to run),
groups whose samples all score alike are left out of the update (DAPO §3.2), 32 prompts per step rather
than the chapter's 16, and each step's problems drawn by level in proportion to the chance that a group
of G samples disagrees, 1 − p^G − (1 − p)^G (p: the level's running accuracy). At the SFT start 2-digit
sums have pass@1 0.64 and pass@8 0.96, 3-digit sums 0.03 and 0.17 (pass@64 0.58): uniform draws spend
half the rollouts on 3-digit groups that are ~80 % all wrong, hence degenerate.
Measured 2026-12-07 from one SFT start (0.333), mean of the last three evaluations: levels by
informativeness 0.541 (+20.8 points, 946 steps in 600 s; grpo.json); uniform draws 0.530 (+19.7, 788 steps;
grpo_uniform.json). One run each: the 1.1-point gap is within the evaluation's noise, so the sampling
is not shown to be better, only to reach the target here. Earlier recipes from another build of the
same start (0.343, uniform draws): P=16, lr 1e-4 0.498; P=16, lr 3e-4 collapsed; P=32, lr 1.5e-4 0.508;
P=32, lr 2e-4 0.503; P=16 × G=16, lr 1.5e-4 0.496.
Held-out pass@1 is measured every --every steps (evaluations are not counted in the budget); the score
is the mean of the last three.
Target (issue 26): +20 points of held-out pass@1 over the SFT start within 10 minutes of CPU.
Usage: python bench/grpo.py [--budget-s 600] [--every 50] [--steps 1000] [--lr 1.5e-4] [--prompts 32]
       [--sampling informative|uniform] [--name grpo] ...
"""
from __future__ import annotations

import argparse

import pandas as pd

from dstutor.bench import save_results
from dstutor.rl import GRPOConfig, evaluate_policy, make_problems, task_tokenizer, total_reward, train_grpo
from dstutor.rl.pipeline import Recipe, cold_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-s", type=float, default=600.0, help="GRPO wall-clock budget in seconds")
    parser.add_argument("--every", type=int, default=50, help="steps between held-out evaluations")
    parser.add_argument("--sft-steps", type=int, default=330)
    parser.add_argument("--steps", type=int, default=1000, help="GRPO steps (the cosine decay ends here)")
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="1: constant learning rate after warmup")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--keep-degenerate", action="store_true", help="update on degenerate groups too")
    parser.add_argument("--sampling", choices=("uniform", "informative"), default="informative",
                        help="problems per step: uniform, or levels by their chance of an informative group")
    parser.add_argument("--name", default="grpo", help="results file name in bench/results")
    args = parser.parse_args()
    tokenizer = task_tokenizer()
    train, test = make_problems("addition", (2, 3), 2000, 200, seed=0)
    config = GRPOConfig(steps=args.steps, prompts_per_step=args.prompts, group_size=args.group_size, lr=args.lr,
                        min_lr_ratio=args.min_lr_ratio, beta=args.beta, drop_degenerate=not args.keep_degenerate,
                        sampling=args.sampling,
                        max_new_tokens=40, time_limit_s=args.budget_s)
    recipe = Recipe(size="small", sft_steps=args.sft_steps, grpo=config)
    policy = cold_start(recipe, tokenizer, train, seed=0)

    def pass_at_1(step: int, model) -> dict | None:
        if step % args.every:
            return None
        return {"held-out pass@1": evaluate_policy(model, tokenizer, test, 8, (1,), seed=0)["pass@1"]}

    start = pass_at_1(0, policy)["held-out pass@1"]
    history = train_grpo(policy, tokenizer, train, total_reward, config, callback=pass_at_1)
    end = evaluate_policy(policy, tokenizer, test, 8, (1,), seed=0)["pass@1"]
    checkpoints = history.dropna(subset=["held-out pass@1"])
    table = pd.concat([pd.DataFrame([{"step": 0, "GRPO seconds": 0.0, "held-out pass@1": start}]),
                       checkpoints[["step", "elapsed_s", "held-out pass@1"]].rename(columns={"elapsed_s": "GRPO seconds"}),
                       pd.DataFrame([{"step": int(history.step.iloc[-1]), "GRPO seconds": history.elapsed_s.iloc[-1],
                                      "held-out pass@1": end}])]).drop_duplicates("step", keep="last")
    last_three = table["held-out pass@1"].iloc[-3:].mean()  # the end, not the best point: a recipe must hold its gain
    gain = last_three - start
    recipe_text = (f"small policy, addition at 2–3 digits, P={args.prompts} × G={args.group_size}, lr {args.lr:g}"
                   + (f" with cosine decay to {args.min_lr_ratio:g}× over {args.steps} steps" if args.min_lr_ratio < 1 else "")
                   + f", β {args.beta:g}" + (", degenerate groups left out" if not args.keep_degenerate else "")
                   + (", levels drawn by their chance of an informative group" if args.sampling == "informative" else ""))
    summary = (f"GRPO ({recipe_text}), seed 0: {len(history)} steps in {history.elapsed_s.iloc[-1]:.0f} s, "
               f"**{history.step_s.median():.2f} s per step** (median), rollouts at "
               f"**{history.rollout_tokens_per_s.median():,.0f} tokens/s** with the KV cache. Held-out pass@1 went from "
               f"{start:.3f} after SFT to **{last_three:.3f}** as the mean of the last three evaluations "
               f"({100 * gain:+.1f} points; the final one {end:.3f}).")
    print(table.to_string())
    print(summary)
    targets = {"pass@1 +20 points within 10 min of GRPO": bool(gain >= 0.20 and history.elapsed_s.iloc[-1] <= 600 + history.step_s.max())}
    print("written:", save_results(args.name, table.set_index("step").round(4), summary, targets))


if __name__ == "__main__":
    main()
