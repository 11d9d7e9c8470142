"""Experiments built on the trainer: gradient bias, convergence, modality structure, embedding reports."""
