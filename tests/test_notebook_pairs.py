"""Every notebook is a jupytext pair in sync, committed without outputs, with a documented parameters cell."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "tests" / "fixtures" / "notebooks").glob("*.ipynb")
)
TYPES = {"int", "float", "str", "bool", "list[int]", "list[float]", "list[str]"}


def _cells(notebook) -> list[tuple[str, str, tuple[str, ...]]]:
    return [
        (cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ())))
        for cell in notebook.cells
        if cell.source.strip()
    ]


def test_every_notebook_folder_entry_is_a_pair():
    folder = ROOT / "notebooks"
    stems_py = {p.stem for p in folder.glob("*.py")}
    stems_nb = {p.stem for p in folder.glob("*.ipynb")}
    assert stems_py == stems_nb, f"unpaired notebooks: {sorted(stems_py ^ stems_nb)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_is_in_sync(path: Path):
    script = path.with_suffix(".py")
    assert script.exists(), (
        f"{path.name} has no py:percent twin; run `jupytext --set-formats ipynb,py:percent`"
    )
    from_py, from_nb = jupytext.read(script), jupytext.read(path)
    assert _cells(from_py) == _cells(from_nb), (
        f"{path.name} and {script.name} differ; run `jupytext --sync {script.relative_to(ROOT)}`"
    )
    assert "py:percent" in from_nb.metadata.get("jupytext", {}).get("formats", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path):
    raw = json.loads(path.read_text())
    dirty = [
        i
        for i, cell in enumerate(raw["cells"])
        if cell.get("outputs") or cell.get("execution_count") is not None
    ]
    assert not dirty, f"{path.name} has outputs in cells {dirty}; strip them (jupytext --sync from the .py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_declares_typed_documented_parameters(path: Path):
    notebook = jupytext.read(path)
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []), f"{path.name}: first code cell not tagged"
    declared = papermill.inspect_notebook(str(path))
    assert declared, f"{path.name}: no parameters found"
    for name, entry in declared.items():
        assert entry["inferred_type_name"] in TYPES, (
            f"{path.name}: {name} has type {entry['inferred_type_name']}"
        )
        assert entry["help"], f"{path.name}: parameter {name} has no '# help' comment"
