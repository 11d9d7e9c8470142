"""Training: one resumable loop (:mod:`.trainer`), its tasks, GradCache and torch.distributed helpers."""
