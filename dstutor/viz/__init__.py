"""Plots for the course: importing this package registers the offline plotly renderer."""
from dstutor.viz.plotly_setup import register_offline_renderer

register_offline_renderer()

__all__ = ["register_offline_renderer"]
