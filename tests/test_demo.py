"""The README's main job, in its quick form: every part runs and lands in the run store."""

from __future__ import annotations

import pytest

from workbench.demo import main
from workbench.runs import list_runs


@pytest.mark.slow
def test_quick_demo_writes_every_part(tmp_path, capsys):
    assert main(["--quick", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for part in ("1/4", "2/4", "3/4", "4/4", "Done in"):
        assert part in out
    runs = {run.run_id: run for run in list_runs(tmp_path)}
    assert runs["demo-digits-ntxent-quick"].is_complete
    assert "gradbias" in runs["demo-gradbias-quick"].tables
    assert runs["demo-convergence-quick-summary"].is_complete
    assert runs["demo-ablation-quick-summary"].is_complete
    assert all(run.status == "complete" for run in runs.values())
