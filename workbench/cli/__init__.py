"""The ``workbench`` command, the papermill notebook runner and the demo."""

from workbench.cli.command import main

__all__ = ["main"]
