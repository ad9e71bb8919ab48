"""A SampleError raised in a DataLoader worker reaches the user as its own one-line message (torch wraps it
in "Caught SampleError in DataLoader worker process N" with the worker's traceback otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.engine.test_evaluate import make_checkpoint, make_tree

from anomalyseg.cli import main
from anomalyseg.data import SampleError, StreetHazards, collate_samples
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.loaders import make_eval_loader, make_train_loader, read_error_count
from anomalyseg.errors import UserError


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
