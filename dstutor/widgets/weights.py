"""WeightsPanel: one slider per dimension of the evaluation matrix; moving one re-ranks the models at once."""
from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as W
import pandas as pd
from IPython.display import display

from dstutor.evaluate.matrix import DIMENSIONS, SEED_WEIGHTS, weighted_score


class WeightsPanel:
    """Sliders for the six weights over measured dimension scores (models × dimensions); shows the ranking."""

    def __init__(self, scores: pd.DataFrame, weights: Mapping[str, float] = SEED_WEIGHTS):
        self.scores = scores
        self.sliders = {d: W.FloatSlider(value=weights[d], min=0.0, max=1.0, step=0.05, description=d,
                                         style={"description_width": "110px"}) for d in DIMENSIONS}
        self.output = W.Output()
        for slider in self.sliders.values():
            slider.observe(lambda _: self.show(), names="value")
        self.widget = W.HBox([W.VBox(list(self.sliders.values())), self.output])
        self.show()

    def weights(self) -> dict[str, float]:
        """The sliders' current weights by dimension."""
        return {d: slider.value for d, slider in self.sliders.items()}

    def ranking(self) -> pd.DataFrame:
        """Models sorted by their weighted score under the current weights."""
        return weighted_score(self.scores, self.weights()).sort_values(ascending=False).rename("weighted score").to_frame()

    def show(self) -> None:
        """Redraw the ranking; all-zero weights give a message instead of an error."""
        with self.output:
            self.output.clear_output(wait=True)
            if sum(self.weights().values()) == 0:
                print("set at least one weight above 0")
                return
            display(self.ranking().round(3))

    def _ipython_display_(self) -> None:
        display(self.widget)
