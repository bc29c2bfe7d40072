"""dstutor.viz: figures render offline (no plotly.js or MathJax from a CDN) and sliders switch series."""
import plotly.io as pio

import dstutor.viz  # noqa: F401  (registers the renderer)
from dstutor.viz.interactive import slider_bars


def test_renderer_emits_lab_mimetype_and_offline_html():
    fig = slider_bars(["a", "b"], {"one": [1, 2], "two": [2, 1]}, title="t", x_title="x",
                      y_title="y", step_title="s")
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=pio.renderers.default)
    assert "application/vnd.plotly.v1+json" in bundle
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "cdn" not in html.lower() and "mathjax" not in html.lower() and len(html) < 50_000


def test_slider_shows_one_series_per_step():
    fig = slider_bars(["a", "b"], {"one": [1, 2], "two": [2, 1], "three": [0, 0]}, title="t",
                      x_title="x", y_title="y", step_title="s")
    assert [trace.visible for trace in fig.data] == [True, False, False]
    visibility = [step["args"][0]["visible"] for step in fig.layout.sliders[0].steps]
    assert visibility == [[True, False, False], [False, True, False], [False, False, True]]
