"""The training workflow sits above the engine: ``anomalyseg.workflows`` imports torch-free, the engine keeps
the loops only (no forwarder back up into a workflow)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import anomalyseg.engine.train as engine_train


def test_workflows_package_is_torch_free():
    """Importing the package costs nothing; each workflow is its own module holding the function of its name."""
    probe = ("import json, sys\nimport anomalyseg.workflows\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
             "or m.startswith('anomalyseg.workflows.') or m.startswith('anomalyseg.engine'))))\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
    for module, name in (("train", "train"), ("fit", "fit_scorers"), ("evaluate", "evaluate"),
                         ("visualize", "visualize"), ("sweep", "sweep"), ("demo", "demo")):
        assert callable(getattr(importlib.import_module(f"anomalyseg.workflows.{module}"), name))


def test_engine_keeps_the_loops_only():
    assert sorted(engine_train.__all__) == ["autocast", "evaluate_segmentation", "train_one_epoch"]
    assert not hasattr(engine_train, "train")
    assert importlib.util.find_spec("anomalyseg.engine.runner") is None
