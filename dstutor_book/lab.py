"""JupyterLab set up for the course: chapters (.md) open as notebooks, nothing reaches out to the web.

`make lab` and the browser test both write these settings into a project-local Jupyter config folder
(JUPYTER_CONFIG_DIR), so the reader's own Jupyter settings are never touched.
"""
from __future__ import annotations

import json
from pathlib import Path

LAB_SETTINGS = {
    # what `jupytext-config set-default-viewer markdown myst` writes: double-click opens a notebook
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}},
    # no "get notified about official Jupyter news?" prompt, no update check (both would go online)
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def write_lab_settings(config_dir: str | Path) -> Path:
    """Merge the course's JupyterLab settings into config_dir/labconfig/default_setting_overrides.json."""
    path = Path(config_dir) / "labconfig" / "default_setting_overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in LAB_SETTINGS.items():
        settings[plugin] = {**settings.get(plugin, {}), **values}
    path.write_text(json.dumps(settings, indent=2))
    return path


if __name__ == "__main__":
    import sys

    print(f"JupyterLab settings written to {write_lab_settings(sys.argv[1])}")
