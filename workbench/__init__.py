"""workbench: a workbench for contrastive representation learning."""

from workbench.losses import build_loss, loss_names

__version__ = "0.1.0"
__all__ = ["__version__", "build_loss", "loss_names"]
