"""DeployPanel: weight bits, pruned channel share and int8 mode → size, held-out perplexity and latency."""
from __future__ import annotations

import datasets
import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display
from torch import nn

from dstutor.deploy.int8 import MODES, packed_bytes, quantize_int8
from dstutor.deploy.measure import variant_table
from dstutor.deploy.prune import prune_channels
from dstutor.viz.deploy import size_quality

BITS = [32, 8, 6, 4, 3, 2]  # 32: the float weights, not quantised


class DeployPanel:
    """Run prunes a share of every FFN's channels, quantises the rest to `bits`, and measures it beside the model.

    Each run times the variant and the unchanged model in turns, so its speed-up is read within one run.
    """

    def __init__(self, model: nn.Module, blocks: datasets.Dataset, batches: int, prefill: torch.Tensor,
                 decode_prompt: torch.Tensor, rounds: int = 3):
        self.model, self.blocks, self.batches, self.rounds = model, blocks, batches, rounds
        self.prefill, self.decode_prompt = prefill, decode_prompt
        style = {"description_width": "initial"}
        self.controls = {
            "bits": W.Dropdown(options=BITS, value=8, description="weight bits", style=style),
            "channels": W.FloatSlider(value=0.0, min=0.0, max=0.6, step=0.05, description="FFN channels pruned",
                                      style=style),
            "mode": W.Dropdown(options=list(MODES), value="dynamic", description="int8 matmul", style=style),
        }
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.run())
        self.message, self.output = W.HTML(), W.Output()
        self.results = pd.DataFrame()
        self.widget = W.VBox([W.HBox([W.VBox(list(self.controls.values())), self.button]), self.message, self.output])

    def values(self) -> dict:
        """The controls' current values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def variant(self, bits: int, channels: float, mode: str) -> nn.Module:
        """The model with `channels` of each FFN's channels pruned, then its matrices at `bits` (32: left in fp32)."""
        pruned = prune_channels(self.model, fraction=channels)[0] if channels > 0 else self.model
        return pruned if bits == 32 else quantize_int8(pruned, mode, bits=bits)

    def run(self) -> pd.Series:
        """Build and measure the variant of the current settings; add its row to `results`."""
        settings = self.values()
        self.message.value = "<i>measuring…</i>"
        self.button.disabled = True
        try:
            variant = self.variant(**settings)
            table = variant_table({"fp32": self.model, "variant": variant}, self.blocks, self.batches, self.prefill,
                                  self.decode_prompt, rounds=self.rounds).set_index("variant")
        finally:
            self.button.disabled = False
        return self.record(settings, table.loc["variant"], table.loc["fp32"], packed_bytes(variant, settings["bits"]))

    def record(self, settings: dict, measured: pd.Series, reference: pd.Series, packed: int) -> pd.Series:
        """Add a measured variant (a variant_table row, with the fp32 row timed in the same turns) to the table."""
        label = f"run {len(self.results) + 1}"
        row = pd.Series({**settings, "MB stored": measured.MB, "MB packed": packed / 2**20,
                         "perplexity": measured.perplexity, "accuracy": measured.accuracy,
                         "prefill_ms": measured.prefill_ms, "prefill speed-up": reference.prefill_ms / measured.prefill_ms,
                         "decode_tokens_per_s": measured.decode_tokens_per_s}, name=label)
        self.results = pd.concat([self.results, row.to_frame().T]).infer_objects()
        self.message.value = (f"{label} done: {row['MB packed']:.2f} MB packed, perplexity {row.perplexity:.3f}, "
                              f"prefill {row['prefill speed-up']:.2f}× the fp32 model's speed")
        self._show()
        return row

    def _show(self) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            display(self.results.round(3))
            points = self.results.assign(MB=self.results["MB packed"].astype(float), variant=[
                f"{name}: {r.bits} bits, −{r.channels:.0%} channels" for name, r in self.results.iterrows()])
            figure = size_quality(points, "Runs so far: size if packed at their bits vs held-out perplexity")
            display(figure)
            plt.close(figure)  # else the inline backend draws it a second time below the cell

    def _ipython_display_(self) -> None:
        display(self.widget)
