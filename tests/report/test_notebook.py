"""``notebooks/main.ipynb`` runs top to bottom as shipped (``TRAIN = False``, from a fresh state: no data, no
checkpoint) through nbclient, and produces every artefact it promises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.engine.helpers import REPO_ROOT

from anomalyseg.report.results import read_results

NOTEBOOK = REPO_ROOT / "notebooks" / "main.ipynb"


def test_notebook_imports_only_the_package():
    nb = json.loads(NOTEBOOK.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imports = [line.split()[1] for line in code.splitlines() if line.startswith(("import ", "from "))]
    allowed = ("anomalyseg", "os", "pathlib", "torch", "yaml", "IPython")
    assert imports and all(m.split(".")[0] in allowed for m in imports), imports
    assert "TRAIN = False" in code
    assert not any(line.lstrip().startswith("class ") for line in code.splitlines())  # no logic of its own


@pytest.mark.slow
def test_notebook_runs_as_shipped_from_a_fresh_state(tmp_path, monkeypatch):
    """The notebook exactly as a user opens it in a fresh clone (``TRAIN = False``, no checkpoint anywhere, no
    data): only its output folder is redirected into tmp_path. It generates its data, trains the quick model
    once (``configs/demo/notebook_quick.yaml``) and runs every section (measured: about 1.5 minutes on 2 cores)."""
    nbformat = pytest.importorskip("nbformat", reason="notebook test needs the dev extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="notebook test needs the dev extra (nbclient, ipykernel)")
    for key in [k for k in os.environ if k.startswith("ANOMALYSEG_NB_")]:
        monkeypatch.delenv(key)
    work = tmp_path / "work"
    assert not work.exists()
    monkeypatch.setenv("ANOMALYSEG_NB_WORK", str(work))
    monkeypatch.setenv("ANOMALYSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT / "src"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "TRAIN = False" in nb.cells[1].source
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "does not exist yet: training the quick model" in text
    pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
    assert pngs >= 7  # class shares, batch, panel, grid, legend, curves, threshold sensitivity
    run = work / "runs" / "quick"
    assert (run / "checkpoints" / "best.pt").is_file() or (run / "checkpoints" / "last.pt").is_file()
    results = read_results(work / "results" / "main.json")
    assert len(results["scorers"]) >= 8  # "all": every registered scorer that fits the model
    assert Path(results["checkpoint"]["path"]).resolve().is_relative_to(run.resolve())
    manifest = json.loads((work / "results" / "panels" / "panels.json").read_text())
    assert len(manifest["samples"]) == 3 and manifest["selection"]["mode"] == "worst"
    page = (work / "report" / "report.html").read_text()
    assert "Qualitative panels" in page and "PR and ROC curves" in page  # panels found beside the results
    table = (work / "ablation" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| 0.5 |", "| 1 |", "| 2 |"))]
    assert len(rows) == 6, table
