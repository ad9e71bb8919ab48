"""The ``export`` workflow: a checkpoint and its scorers as ONE ONNX graph.

The graph takes ``image`` (uint8 RGB, ``N x 3 x H x W`` at the input contract's size, N free) and returns
``logits`` (``N x C x H x W``) and one ``score_<scorer>`` (``N x H x W``, higher = more anomalous) per scorer.
Everything a deployment would otherwise re-implement is inside: the scaling to [0, 1], the ImageNet
normalisation every model here takes (a model whose weights expect another normalisation, e.g. an imported
ENet with ``norm=none``, converts it inside itself, as in PyTorch) and the scorers' fitted statistics, baked
in as constants from ``<checkpoint>.scorers.pt``.

The exporter is torch's default one (``dynamo=True``, torch.export + onnxscript): the TorchScript exporter
is deprecated in torch >= 2.9 and the scorers' Python (cached softmax statistics shared by several scorers,
dict lookups) traces the same way under both. Scorers run their torch side (``torch_path_on_cpu``), never
the numpy shortcuts taken for CPU tensors. A scorer whose graph cannot be exported is named in one line.
The written file is checked with onnxruntime against PyTorch on two random images before the command returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalyseg.errors import UserError
from anomalyseg.files import check_output

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from anomalyseg.scoring.base import Scorer

log = logging.getLogger(__name__)

#: ONNX opset written by default (the dynamo exporter's own default in torch 2.15).
DEFAULT_OPSET = 18
INPUT_NAME = "image"
LOGITS_NAME = "logits"
#: |onnxruntime - PyTorch| within which two values agree (logits and scores).
TOLERANCE = 1e-4
#: Largest fraction of values allowed beyond TOLERANCE (see :func:`check_onnx`).
MAX_DIFFERING = 0.01


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    size: tuple[int, int]  # (H, W) of the graph's input
    batch: str  # "N" (any) or "1"
    outputs: list[str]
    opset: int
    max_abs_diff: float  # onnxruntime vs PyTorch on two random images, over every output
    differing: float  # fraction of those values that differ by more than TOLERANCE
    seconds: float


class _ReprKeyCache(dict):
    """The scorers' shared softmax cache, keyed by ``repr(key)``: under torch.export a key holding the symbolic
    batch size (a SymInt) is unhashable."""

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(repr(key), default)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(repr(key), value)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(repr(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(repr(key))


def _build_graph(model: nn.Module, scorers: Sequence[Scorer]) -> nn.Module:
    """``image`` uint8 -> (logits, score_1, ...): the model and the scorers as one module."""
    import torch
    from torch import nn

    from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
    from anomalyseg.models.outputs import SegOutput

    class ExportGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.scorers = list(scorers)
            self.features = any(s.needs_features for s in scorers)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = (image.float() / 255.0 - self.mean) / self.std
            out = self.model(x, return_features=True) if self.features else self.model(x)
            out = SegOutput(out.logits.float(), features=dict(out.features), cache=_ReprKeyCache())
            return (out.logits, *(s.score(out) for s in self.scorers))

    return ExportGraph().eval()


def graph_module(checkpoint: str | Path, scorers: str | Sequence[str], *, contract: str | None = None,
                 states: str | Path | None = None) -> tuple[nn.Module, list[Scorer], Any]:
    """The module that :func:`export_onnx` exports (uint8 image in, logits and scores out), its scorers and the
    loaded checkpoint: the PyTorch side of the comparison (also used by ``benchmarks/export.py``)."""
    from anomalyseg.checkpoints.reload import load_model
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted
    from anomalyseg.scoring import scorers_from_spec
    from anomalyseg.workflows.session import check_void

    spec = scorers if isinstance(scorers, str) else ",".join(scorers)
    if not spec.strip():
        raise UserError("--scorers is empty: name at least one scorer (e.g. max_logit,energy)")
    loaded = load_model(checkpoint, "cpu", contract=contract)
    made = scorers_from_spec(spec, void_index=loaded.contract.void_index)
    check_void(made, loaded.num_outputs)
    load_fitted(made, Path(states) if states else default_states_path(loaded.path), loaded.sha256)
    return _build_graph(loaded.model, made), made, loaded


def resolve_size(contract_size: tuple[int, int] | None, size: tuple[int, int] | None,
                 checkpoint: Any) -> tuple[int, int]:
    """The graph's (H, W): ``size`` if given, else the contract's; neither is a one-line error."""
    if size is not None:
        return (int(size[0]), int(size[1]))
    if contract_size is None:
        raise UserError(f"{checkpoint} has no input size in its input contract: give --size HxW (e.g. 512x1024)")
    return (int(contract_size[0]), int(contract_size[1]))


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    scorers: str | Sequence[str],
    size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    contract: str | None = None,
    states: str | Path | None = None,
    dynamic_batch: bool = True,
    check: bool = True,
) -> ExportResult:
    """Export ``checkpoint`` with ``scorers`` (a spec such as ``"max_logit,energy"`` or names) to ``out``.

    Args:
        size: ``(H, W)`` of the input; default the input contract's size (required when it has none).
        opset: ONNX opset version.
        force: overwrite an existing ``out``.
        contract: ``KEY=VALUE,...`` laid over the checkpoint's input contract (as ``evaluate --input-contract``).
        states: fitted scorer states (default ``<checkpoint stem>.scorers.pt``).
        dynamic_batch: the batch dimension ``N`` is free (else fixed at 1).
        check: run the file with onnxruntime on a random image and compare with PyTorch (needs onnxruntime).
    """
    import time

    out = check_output(out, "--out")
    if out.exists() and not force:
        raise UserError(f"{out} already exists (choose another --out, or --force to overwrite)")
    _require("onnx", "onnxscript")
    if check:
        _require("onnxruntime")
    start = time.perf_counter()
    graph, made, loaded = graph_module(checkpoint, scorers, contract=contract, states=states)
    hw = resolve_size(loaded.contract.size, size, loaded.path)
    names = [LOGITS_NAME, *(f"score_{s.name}" for s in made)]
    _export(graph, made, out, hw, names, opset, dynamic_batch)
    diff, frac = check_onnx(graph, out, hw, names, 2 if dynamic_batch else 1) if check else (float("nan"), float("nan"))
    result = ExportResult(out, hw, "N" if dynamic_batch else "1", names, opset, diff, frac, time.perf_counter() - start)
    log.debug("exported %s with %s to %s (input %dx%d, opset %d, max |onnxruntime - PyTorch| %.2e)",
             loaded.path, ", ".join(s.name for s in made), out, hw[0], hw[1], opset, diff)
    return result


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"export needs {', '.join(missing)}: pip install 'anomalyseg[export]'")


def _export(graph: nn.Module, scorers: Sequence[Scorer], out: Path, hw: tuple[int, int], names: list[str],
            opset: int, dynamic_batch: bool) -> None:
    """torch.onnx.export into a temporary file beside ``out``, renamed when complete; a scorer that does not
    export is found by exporting each alone and named in the error."""
    import torch

    from anomalyseg.metrics.backend import torch_path_on_cpu

    # batch 2: torch.export specialises a dimension of size 1 to a constant, so N would not stay free
    example = torch.randint(0, 256, (2 if dynamic_batch else 1, 3, *hw), dtype=torch.uint8)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"image": {0: torch.export.Dim("N", min=1, max=1024)}} if dynamic_batch else None
    try:
        with torch_path_on_cpu(), torch.no_grad(), _Quiet():
            program = torch.export.export(graph, (example,), dynamic_shapes=dynamic, strict=False)
            torch.onnx.export(program, (example,), str(tmp), input_names=[INPUT_NAME], output_names=names,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False)
        tmp.replace(out)
    except UserError:
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        bad = _unexportable(graph, scorers, example, dynamic)
        if bad:
            raise UserError(f"scorer(s) {', '.join(bad)} cannot be exported to ONNX (leave them out of --scorers)"
                            ) from exc
        raise UserError(f"the model could not be exported to ONNX: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(f"{tmp.name}*"):  # external-data side files of a failed try
            extra.unlink(missing_ok=True)


def _unexportable(graph: nn.Module, scorers: Sequence[Scorer], example: torch.Tensor, dynamic: Any) -> list[str]:
    """Names of the scorers that fail to export alone (with the same model)."""
    import io

    import torch

    from anomalyseg.metrics.backend import torch_path_on_cpu

    bad = []
    for scorer in scorers:
        alone = _build_graph(graph.model, [scorer])
        try:
            with torch_path_on_cpu(), torch.no_grad(), _Quiet():
                program = torch.export.export(alone, (example,), dynamic_shapes=dynamic, strict=False)
                torch.onnx.export(program, (example,), io.BytesIO(), dynamo=True, verbose=False)
        except Exception:
            bad.append(scorer.name)
    return bad


class _Quiet:
    """Silence the exporter's progress prints and warnings (they go to stdout)."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
            level = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.ERROR)
            self._stack.callback(logging.getLogger(name).setLevel, level)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_both(graph: nn.Module, session: Any, image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """PyTorch's and onnxruntime's outputs for one uint8 ``image`` batch (N, 3, H, W)."""
    import torch

    from anomalyseg.metrics.backend import torch_path_on_cpu

    with torch_path_on_cpu(), torch.no_grad():
        ours = [t.numpy() for t in graph(torch.from_numpy(image))]
    theirs = session.run(None, {INPUT_NAME: image})
    return ours, theirs


def compare(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], names: Sequence[str]) -> tuple[float, float]:
    """(largest |a - b|, fraction of values with |a - b| > :data:`TOLERANCE`) over every output."""
    import numpy as np

    worst, over, total = 0.0, 0, 0
    for a, b, name in zip(ours, theirs, names):
        if a.shape != b.shape:
            raise UserError(f"exported output {name} has shape {b.shape}, PyTorch gives {a.shape}")
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        worst, over, total = max(worst, float(d.max())), over + int((~(d <= TOLERANCE)).sum()), total + d.size
    return worst, over / max(total, 1)


def check_onnx(graph: nn.Module, path: Path, hw: tuple[int, int], names: list[str], batch: int = 2
               ) -> tuple[float, float]:
    """onnxruntime vs PyTorch on ``batch`` random images: (max |diff|, fraction of values > TOLERANCE).

    Models with an argmax inside (ENet's max-unpooling reuses max-pool indices) move a value to another pixel
    where two pooled values are within float32 rounding of each other; PyTorch with another convolution kernel
    (oneDNN off) differs from itself the same way (~0.1 % of the values, up to ~0.5). So the check fails only
    when more than :data:`MAX_DIFFERING` of the values differ, and logs a warning when any does.
    """
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (batch, 3, *hw), dtype=np.uint8)
    ours, theirs = run_both(graph, onnx_session(path), image)
    worst, frac = compare(ours, theirs, names)
    if frac > MAX_DIFFERING:
        raise UserError(f"{path}: onnxruntime differs from PyTorch by more than {TOLERANCE:g} in {frac:.2%} of the "
                        f"values (max {worst:.3g}); the file is kept for inspection")
    if worst > TOLERANCE:
        log.warning("%s: %.3f%% of the values differ from PyTorch by more than %g (max %.3g): near-ties of an argmax "
                    "inside the model (max-unpooling) that float32 rounding breaks either way", path, 100 * frac,
                    TOLERANCE, worst)
    return worst, frac
