"""``notebooks/main.ipynb`` runs top to bottom (``TRAIN = False``, a checkpoint from a tiny training) on tiny
synthetic data through nbclient, and produces every artefact it promises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from tests.engine.helpers import PLUGINS, REPO_ROOT, TINY_MODEL

from anomalyseg.config import load_config
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.report.results import read_results
from anomalyseg.workflows.train import train

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
def test_notebook_runs_on_synthetic_data(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="notebook test needs the dev extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="notebook test needs the dev extra (nbclient, ipykernel)")
    root = write_synthetic(tmp_path / "sh", train=4, val=2, test=3, size=(64, 48), seed=11)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"root": str(root), "crop_size": [48, 64], "batch_size": 2, "val_batch_size": 2, "workers": 0,
                 "scale_range": [0.75, 1.25]},
        "model": {"name": TINY_MODEL, "options": {"width": 6}},
        "train": {"epochs": 1, "progress": False, "device": "cpu", "checkpoint_every_steps": 0, "num_vis_images": 0},
        "out_dir": str(tmp_path / "runs"), "run_name": "tiny",
    }))
    run_dir = train(load_config(config))
    work = tmp_path / "work"
    env = {"ANOMALYSEG_NB_WORK": work, "ANOMALYSEG_NB_DATA": root, "ANOMALYSEG_NB_CONFIG": config,
           "ANOMALYSEG_NB_CHECKPOINT": run_dir, "ANOMALYSEG_NB_DEVICE": "cpu",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{PLUGINS}",  # the tiny model's entry point
           "ANOMALYSEG_NB_SCORERS": "max_logit,msp,energy,entropy,sml_full,mahalanobis", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "2", "ANOMALYSEG_CACHE_DIR": tmp_path / "cache"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    pngs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
    assert pngs >= 7  # class shares, batch, panel, grid, legend, curves, threshold sensitivity
    results = read_results(work / "results" / "main.json")
    assert set(results["scorers"]) == {"max_logit", "msp", "energy", "entropy", "sml_full", "mahalanobis"}
    assert results["checkpoint"]["path"] == str((Path(run_dir) / "checkpoints" / "best.pt").resolve())
    manifest = json.loads((work / "results" / "panels" / "panels.json").read_text())
    assert len(manifest["samples"]) == 3 and manifest["selection"]["mode"] == "worst"
    page = (work / "report" / "report.html").read_text()
    assert "Qualitative panels" in page and "PR and ROC curves" in page  # panels found beside the results
    table = (work / "ablation" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| 0.5 |", "| 1 |", "| 2 |"))]
    assert len(rows) == 6, table
