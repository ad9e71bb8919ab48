"""Library workflows: train, fit scorers, evaluate, visualize, sweep, demo -- plain Python functions that the
command line, the notebook and the tests call the same way (nothing re-enters the program through argv).

>>> from anomalyseg.workflows.fit import fit_scorers
>>> from anomalyseg.workflows.evaluate import evaluate
>>> fit_scorers("runs/r50", "data/streethazards")
>>> outputs = evaluate("runs/r50", "data/streethazards", "results/r50.json", scorers="all")

Each module is named after its workflow (``train``, ``fit``, ``evaluate``, ``visualize``, ``sweep``, ``demo``);
:mod:`.session` holds what evaluate / fit / visualize share (dataset, model, resolution, loader).
"""
