"""A SampleError raised in a DataLoader worker reaches the user as its own one-line message (torch wraps it
in "Caught SampleError in DataLoader worker process N" with the worker's traceback otherwise)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.engine.helpers import tiny_overrides
from tests.engine.test_evaluate import make_checkpoint, make_tree
from tests.engine.test_train_datasets import _cityscapes_tree
from torch.utils.data import Subset

from anomalyseg.cli import main
from anomalyseg.config import load_config
from anomalyseg.data import Cityscapes, SampleError, StreetHazards, collate_samples
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.loaders import make_eval_loader, make_train_loader, read_error_count
from anomalyseg.errors import UserError
from anomalyseg.workflows.train import train


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    """The evaluation tree with test image 2 and test label 4 cut in half."""
    root = make_tree(tmp_path_factory.mktemp("bad") / "sh")
    entries = StreetHazards(root, "test").entries
    _truncate(entries[2].image)
    _truncate(entries[4].label)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_raises_the_workers_sample_error_as_is(bad_tree, workers):
    ds = StreetHazards(bad_tree, "test", transform=EvalTransform(), retry_wait=0)
    bad = ds.entries[2].image
    loader = make_eval_loader(ds, batch_size=1, workers=workers, collate_fn=collate_samples)
    seen = []
    with pytest.raises(SampleError) as err:
        for batch in loader:
            seen += batch["id"]
    assert str(err.value).startswith(f"cannot read image {bad}: ") and "\n" not in str(err.value)
    assert "Caught" not in str(err.value)
    assert seen == [e.id for e in ds.entries[:2]]  # in order, up to the bad file


def test_train_loader_too(bad_tree):
    ds = StreetHazards(bad_tree, "test", transform=EvalTransform(size=(48, 32)), retry_wait=0)
    loader, _ = make_train_loader(ds, batch_size=1, workers=2, seed=0, collate_fn=collate_samples)
    with pytest.raises(UserError, match=r"^cannot read (image|label) \S+: [^\n]*$"):
        list(loader)
    lenient = StreetHazards(bad_tree, "test", transform=EvalTransform(size=(48, 32)), on_error="skip", retry_wait=0)
    loader, _ = make_train_loader(lenient, batch_size=1, workers=2, seed=0, collate_fn=collate_samples)
    assert len(list(loader)) == len(lenient) and read_error_count(loader.dataset) == 2


@pytest.mark.parametrize("which", ["image", "label"])
def test_evaluate_names_the_bad_file_in_one_line(tmp_path, capsys, which):
    """``anomalyseg evaluate --workers 2`` on a synthetic tree with one truncated PNG: exit 2, one stderr line
    naming the file (before: 24-55 lines of "Caught SampleError in DataLoader worker process")."""
    tree = make_tree(tmp_path / "sh")
    entry = StreetHazards(tree, "test").entries[3]
    bad = entry.image if which == "image" else entry.label
    _truncate(bad)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tree), "--out", str(tmp_path / "r.json"),
                 "--workers", "2", "--no-progress", "--size", "48x32", "--scorers", "max_logit"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"anomalyseg: error: cannot read {which} {bad}: image file is truncated", err
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------------
# Cityscapes: the same on_error policy (data.robust.RobustSamples)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_cityscapes(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Cityscapes tree (8 train, 2 val) with train image 3 cut in half; returns (root, that image)."""
    root = _cityscapes_tree(tmp_path_factory.mktemp("bad_cs") / "cityscapes")
    bad = Cityscapes(root, "train").entries[3][1]
    _truncate(bad)
    return root, bad


def test_cityscapes_skips_or_raises_like_streethazards(bad_cityscapes, caplog):
    root, bad = bad_cityscapes
    with pytest.raises(SampleError) as err:
        Cityscapes(root, "train", retry_wait=0)[3]
    assert str(err.value).startswith(f"cannot read image {bad}: ") and "\n" not in str(err.value)

    lenient = Cityscapes(root, "train", on_error="skip", retry_wait=0)
    with caplog.at_level("WARNING", logger="anomalyseg.data"):
        sample = lenient[3]
    assert sample["id"] == lenient.ids[4] and lenient.num_read_errors == 1  # replaced by the next one
    assert str(bad) in caplog.text and lenient.ids[3] in caplog.text

    # counted across two workers and found by the engine through Subset-in-Subset and its own wrappers
    lenient = Cityscapes(root, "train", transform=EvalTransform(), on_error="skip", retry_wait=0)
    loader, _ = make_train_loader(Subset(Subset(lenient, range(6)), [1, 2, 3, 4]), batch_size=1, workers=2, seed=0,
                                  collate_fn=collate_samples)
    ids = sorted(i for batch in loader for i in batch["id"])
    assert ids == sorted(lenient.ids[i] for i in (1, 2, 4, 4))
    assert read_error_count(loader.dataset) == 1


def test_cityscapes_training_skips_or_stops_in_one_line_and_evaluation_raises(bad_cityscapes, tmp_path, capsys,
                                                                                caplog):
    """``train data.dataset=cityscapes``: before, the corrupt image crashed the run whatever data.on_error said."""
    root, bad = bad_cityscapes
    overrides = tiny_overrides(root, tmp_path, "skip", **{"data.dataset": "cityscapes", "train.epochs": 1,
                                                          "data.workers": 2, "data.on_error": "skip"})
    with caplog.at_level("INFO", logger="anomalyseg"):
        run = train(load_config(None, overrides), device="cpu")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 1 and "1 unreadable sample(s) skipped (data.on_error=skip)" in epochs[0], epochs
    assert f"cannot read image {bad}" in (run / "train.log").read_text()  # logged by the worker that skipped it

    capsys.readouterr()
    strict = [o.replace("data.on_error=skip", "data.on_error=raise").replace("run_name=skip", "run_name=raise")
              for o in overrides]
    config = tmp_path / "cs.yaml"
    config.write_text("data:\n  dataset: cityscapes\n")
    assert main(["train", str(config), *strict, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"anomalyseg: error: cannot read image {bad}: image file is truncated"], err

    tree = tmp_path / "cs_bad_val"
    shutil.copytree(root, tree)
    bad_val = Cityscapes(tree, "val").entries[1][1]
    _truncate(bad_val)
    code = main(["evaluate", "--checkpoint", str(run), "--dataset", "cityscapes", "--data-root", str(tree),
                 "--out", str(tmp_path / "r.json"), "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"anomalyseg: error: cannot read image {bad_val}: image file is truncated", err
    assert not (tmp_path / "r.json").exists()
