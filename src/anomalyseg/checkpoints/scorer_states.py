"""Fitted scorer states beside the checkpoint: ``<checkpoint stem>.scorers.pt``.

One file per checkpoint, plain tensors and dicts (read with ``torch.load(weights_only=True)``)::

    {"format": STATES_FORMAT, "checkpoint": path, "checkpoint_sha256": sha,
     "scorers": {name: {"state": Scorer.state_dict(), "split": ..., "input": ..., "fitted": ...}}}

``anomalyseg fit-scorers`` checks early what it may write (:func:`entries_to_keep`) and writes with
:func:`merge_states`: under a lock beside the file (``<states>.lock``) it re-reads the file and merges the new
entries into what is there NOW, so two fits of different scorers into one file both land; one that would now
replace another's entry (same name, or another checkpoint version) is refused unless forced. ``evaluate`` and
``visualize`` read it (:func:`load_fitted`). The sha256 ties the states to one version of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.files import FileLock, load_torch_file, remove_stale_tmp

STATES_FORMAT = "anomalyseg.scorers/1"

#: Seconds a writer waits for another process's read-merge-write of the same states file.
LOCK_WAIT_S = 120.0


def default_states_path(checkpoint: str | Path) -> Path:
    """``CKPT_DIR/<ckpt stem>.scorers.pt``."""
    ckpt = Path(checkpoint)
    return ckpt.with_name(f"{ckpt.stem}.scorers.pt")


def read_states(path: Path) -> dict[str, Any] | None:
    """The states file at ``path`` (``weights_only`` load), or None when absent."""
    if not path.is_file():
        return None
    data = load_torch_file(path, "scorer-states file")
    if not isinstance(data, dict) or data.get("format") != STATES_FORMAT:
        raise UserError(f"{path} is not an anomalyseg scorer-states file (format {STATES_FORMAT!r})")
    return data


def load_fitted(scorers: list[Any], path: Path, checkpoint_sha256: str) -> dict[str, dict[str, Any]]:
    """Load fitted states into every scorer that needs one: the entry of the same name, else one of the same
    kind and fit settings (``sml`` serves ``sml_full``). Returns ``{scorer: provenance of the entry used}``;
    raises :class:`NotFittedError` naming the command to run."""
    needed = [s for s in scorers if s.requires_fit]
    if not needed:
        return {}
    data = read_states(path)
    if data is not None and data.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"fitted scorer states {path} belong to another version of the checkpoint (sha256 "
                        "differs): run `anomalyseg fit-scorers ... --force` again")
    entries = (data or {}).get("scorers", {})
    used: dict[str, dict[str, Any]] = {}
    for scorer in needed:
        candidates = [scorer.name] if scorer.name in entries else []
        candidates += [n for n, e in entries.items() if n != scorer.name and e["state"].get("kind") == scorer.kind
                       and e["state"].get("fit_config") == scorer.fit_config()]
        if candidates:
            entry = entries[candidates[0]]
            scorer.load_state_dict(entry["state"])
            used[scorer.name] = {"entry": candidates[0], **{k: v for k, v in entry.items() if k != "state"}}
    missing = [s.name for s in needed if s.name not in used]
    if missing:
        where = f"{path} has no entry for them" if data is not None else f"{path} does not exist"
        raise NotFittedError(
            f"scorer(s) {', '.join(missing)} need fitting ({where}): run `anomalyseg fit-scorers --checkpoint CKPT "
            f"--data-root DIR --scorers {','.join(missing)}` first")
    return used


def entries_to_keep(path: Path, names: Sequence[str], checkpoint_sha256: str, force: bool) -> dict[str, Any]:
    """Entries of the existing states file at ``path`` that a new fit of ``names`` leaves in place.

    Refuses (unless ``force``) to replace an entry of the same name or a file fitted for another version of
    the checkpoint; with ``force`` a stale file is dropped whole. Nothing is written here.
    """
    existing = read_states(path)
    if existing is None:
        return {}
    clash = [n for n in names if n in existing.get("scorers", {})]
    stale = existing.get("checkpoint_sha256") != checkpoint_sha256
    if (clash or stale) and not force:
        why = (f"already holds fitted states for {', '.join(clash)}" if clash
               else "was fitted for another version of the checkpoint")
        raise UserError(f"{path} {why}; pass --force to replace them")
    return {} if stale else {k: v for k, v in existing["scorers"].items() if k not in set(names)}


def write_states(path: Path, checkpoint: Path, checkpoint_sha256: str, entries: dict[str, Any]) -> Path:
    """Write the states file atomically (see :func:`anomalyseg.checkpoints.io.save_checkpoint`)."""
    from anomalyseg.checkpoints.io import save_checkpoint

    return save_checkpoint(path, {"format": STATES_FORMAT, "checkpoint": str(checkpoint.resolve()),
                                  "checkpoint_sha256": checkpoint_sha256, "scorers": entries})


def lock_path(path: Path) -> Path:
    """``<states>.lock``: held while one process reads, merges and writes ``path``."""
    return path.with_name(f"{path.name}.lock")


def merge_states(path: Path, checkpoint: Path, checkpoint_sha256: str, new: dict[str, Any], force: bool) -> Path:
    """Merge ``new`` entries into the states file at ``path`` as it is now, under ``<states>.lock``.

    The file is re-read inside the lock (another ``fit-scorers`` may have written it since the early
    :func:`entries_to_keep` check) and the same rules apply: replacing an entry of the same name, or a file
    fitted for another version of the checkpoint, needs ``force``. Temporary files of the states file left by
    dead writers are removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path), f"scorer-states file {path}", wait=LOCK_WAIT_S):
        remove_stale_tmp(path.parent, path.name)
        kept = entries_to_keep(path, list(new), checkpoint_sha256, force)
        return write_states(path, checkpoint, checkpoint_sha256, {**kept, **new})
