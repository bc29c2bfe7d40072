"""Training: the Trainer loop, learning-rate schedules."""
from dstutor.train.schedules import SCHEDULES, lr_multiplier
from dstutor.train.trainer import NonFiniteError, TrainConfig, Trainer
from dstutor.train.sweep import final_rows, fit_on_blocks, grid_search, run_variants, with_values
from dstutor.train.seeds import compare_sentence, final_values, run_seeds, spread

__all__ = ["Trainer", "TrainConfig", "NonFiniteError", "lr_multiplier", "SCHEDULES", "run_variants", "final_rows", "fit_on_blocks",
           "grid_search", "with_values",
           "run_seeds", "final_values", "spread", "compare_sentence"]
