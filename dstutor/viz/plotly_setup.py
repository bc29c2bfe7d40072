"""An offline plotly renderer: JupyterLab gets the plotly mimetype, the static book gets plain HTML.

The book loads `plotly.min.js` once per page (see book/_ext), so each figure's HTML must not embed
plotly.js again nor pull MathJax from a CDN, which plotly's stock `notebook` renderer does.
"""
from __future__ import annotations

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

RENDERER_NAME = "dstutor_html"


class OfflineHtmlRenderer(MimetypeRenderer):
    """Render a figure as a `text/html` div that expects `window.Plotly` to be loaded by the page."""

    def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
        html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           config={"displaylogo": False})
        return {"text/html": html}


def register_offline_renderer() -> None:
    """Make `fig.show()` emit both the Lab mimetype and offline HTML for the book."""
    pio.renderers[RENDERER_NAME] = OfflineHtmlRenderer()
    pio.renderers.default = f"plotly_mimetype+{RENDERER_NAME}"
