"""MemoryPanel: parameters, GPUs, ZeRO stage and GPU size → model state per GPU, redrawn as a control moves."""
from __future__ import annotations

import ipywidgets as W
import pandas as pd
from IPython.display import display

from dstutor.train.memory import ZERO_STAGES, zero_memory_per_gpu

GPU_COUNTS = [1, 2, 4, 8, 16, 64, 256, 2048]


class MemoryPanel:
    """Controls for `zero_memory_per_gpu`; shows GB per GPU for weights, gradients, optimiser and whether it fits."""

    def __init__(self, n_params: float = 7e9, n_gpus: int = 8, stage: int = 0, gpu_gb: float = 80):
        style = {"description_width": "initial"}
        self.controls = {
            "n_params": W.FloatLogSlider(value=n_params, min=8, max=12, step=0.05, description="parameters",
                                         readout_format=".3g", style=style),
            "n_gpus": W.Dropdown(options=GPU_COUNTS, value=n_gpus, description="GPUs", style=style),
            "stage": W.Dropdown(options=sorted(ZERO_STAGES), value=stage, description="ZeRO stage", style=style),
            "gpu_gb": W.Dropdown(options=[24, 40, 80, 141], value=gpu_gb, description="GB per GPU", style=style),
        }
        self.output = W.Output()
        for control in self.controls.values():
            control.observe(lambda _: self.show(), names="value")
        self.widget = W.HBox([W.VBox(list(self.controls.values())), self.output])
        self.show()

    def values(self) -> dict:
        """The controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def table(self) -> pd.DataFrame:
        """GB per GPU by part under the current settings, with the total and whether it fits one GPU."""
        v = self.values()
        gb = zero_memory_per_gpu(v["n_params"], v["n_gpus"], v["stage"])
        fits = "yes" if gb["total"] <= v["gpu_gb"] else f"no ({gb['total'] / v['gpu_gb']:.1f}× the GPU)"
        return pd.DataFrame({"GB per GPU": {**{k: round(x, 2) for k, x in gb.items()}, "fits one GPU": fits}})

    def show(self) -> None:
        """Redraw the table for the current settings."""
        with self.output:
            self.output.clear_output(wait=True)
            display(self.table())

    def _ipython_display_(self) -> None:
        display(self.widget)
