"""The book's tooling, kept out of the course package: executing chapters, deciding which are stale,
checking their prose against their outputs, and JupyterLab's settings. `make book`, `make lab` and the
tests use it; a reader's code never imports it, so `import dstutor` loads no notebook machinery.
"""
