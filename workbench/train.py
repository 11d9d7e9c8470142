"""``python -m workbench.train``: the trainer's command line (see :mod:`workbench.training.trainer`)."""

from workbench.training.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
