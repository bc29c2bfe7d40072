"""Widgets that rerun experiments in the kernel (JupyterLab); the book shows their last state."""
from dstutor.widgets.deploy import DeployPanel
from dstutor.widgets.memory import MemoryPanel
from dstutor.widgets.panels import HyperParameterPanel

__all__ = ["DeployPanel", "HyperParameterPanel", "MemoryPanel"]
