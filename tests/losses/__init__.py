"""Tests of the loss zoo (workbench.losses), one module per loss."""
