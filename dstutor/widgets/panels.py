"""HyperParameterPanel: sliders and menus built from config dataclass fields, a Run button, a comparison."""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from dstutor.train.sweep import Checked, summarize, with_values
from dstutor.viz.training import loss_curves

# A range is (low, high) for a linear slider, (low, high, "log") for a log slider, or a list of choices.
Range = tuple | list


def _widget(name: str, value, spec: Range) -> W.ValueWidget:
    style = {"description_width": "initial"}
    if isinstance(spec, list):
        return W.Dropdown(options=spec, value=value, description=name, style=style)
    if isinstance(value, bool):
        return W.Checkbox(value=value, description=name, style=style)
    if len(spec) == 3 and spec[2] == "log":
        return W.FloatLogSlider(value=value, min=math.log10(spec[0]), max=math.log10(spec[1]), step=0.1,
                                description=name, style=style, readout_format=".1e")
    if isinstance(value, int):
        return W.IntSlider(value=value, min=spec[0], max=spec[1], description=name, style=style)
    return W.FloatSlider(value=value, min=spec[0], max=spec[1], step=(spec[1] - spec[0]) / 100,
                         description=name, style=style, readout_format=".3g")


class HyperParameterPanel:
    """Controls for chosen fields of config dataclasses; Run trains with them and adds a row to `results`.

    run(**configs) receives copies of `configs` with the controls' values and returns a training
    history (by default a DataFrame with step, loss and optionally val_loss). `summary` turns a history
    into the table's numbers and `plot` draws all histories (a `variant` column names each run); the
    defaults read a language model's losses.
    """

    def __init__(self, run: Callable[..., pd.DataFrame], configs: Mapping[str, Checked], ranges: Mapping[str, Range],
                 summary: Callable[[pd.DataFrame], dict[str, float]] = summarize,
                 plot: Callable[[pd.DataFrame], object] = lambda h: loss_curves(h, title="runs so far")):
        self.run_fn, self.configs, self.summary, self.plot = run, dict(configs), summary, plot
        fields = {name: (key, getattr(config, f.name)) for key, config in self.configs.items()
                  for f in dataclasses.fields(config) for name in (f.name, f"{key}.{f.name}")}
        unknown = [name for name in ranges if name not in fields]
        if unknown:
            raise ValueError(f"no config has the field(s) {unknown}; fields are {sorted(fields)}")
        self.controls = {name: _widget(name, fields[name][1], spec) for name, spec in ranges.items()}
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        self.button.on_click(lambda _: self.run())
        self.message, self.output, self.comparison = W.HTML(), W.Output(), W.Output()
        self.results = pd.DataFrame()
        self.histories: list[pd.DataFrame] = []
        self.widget = W.VBox([W.HBox([W.VBox(list(self.controls.values())), self.button]), self.message,
                              self.output, self.comparison])

    def values(self) -> dict:
        """The controls' current values by field name."""
        return {name: control.value for name, control in self.controls.items()}

    def run(self) -> pd.DataFrame | None:
        """Train with the current values; show an error message instead of a traceback for bad settings."""
        try:
            configs = with_values(self.configs, self.values())
        except (ValueError, TypeError) as error:
            self.message.value = f"<b style='color:#b00'>Invalid settings:</b> {error}"
            return None
        self.message.value = "<i>training…</i>"
        self.button.disabled = True
        start = time.perf_counter()
        try:
            with self.output:
                self.output.clear_output()
                history = self.run_fn(**configs)
        except (ValueError, FloatingPointError) as error:  # e.g. a non-finite loss at a huge learning rate
            self.message.value = f"<b style='color:#b00'>The run failed:</b> {error}"
            return None
        finally:
            self.button.disabled = False
        self.record(history, time.perf_counter() - start)
        return history

    def record(self, history: pd.DataFrame, seconds: float) -> None:
        """Add a run made with the controls' current values to the table and plot: the panel's, or one the chapter already made."""
        label = f"run {len(self.histories) + 1}"
        self.histories.append(history.assign(variant=label))
        numbers = self.summary(history)
        row = pd.DataFrame([{"run": label, **self.values(), **numbers, "seconds": seconds}])
        self.results = pd.concat([self.results, row], ignore_index=True)
        self.message.value = f"{label} done: " + ", ".join(f"{name} {value:.3f}" for name, value in numbers.items())
        self._show_comparison()

    def _show_comparison(self) -> None:
        with self.comparison:
            self.comparison.clear_output(wait=True)
            display(self.results.set_index("run").round(4))
            figure = self.plot(pd.concat(self.histories))
            if isinstance(figure, Figure):
                display(figure)
                plt.close(figure)  # else the inline backend draws it a second time below the cell
            else:
                figure.show()

    def _ipython_display_(self) -> None:
        display(self.widget)
