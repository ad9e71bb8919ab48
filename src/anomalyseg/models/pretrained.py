"""Where pretrained weights come from, whether they are on this machine, and one-line errors when not.

Nothing here downloads: the real loading stays in the libraries (torchvision weight enums, smp
``encoder_weights``, ``from_pretrained``); these helpers only look into their caches and word failures.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from anomalyseg.errors import UserError

_HINT_FALSE = "or set `pretrained: false`"


def _reason(exc: BaseException) -> str:
    """First line of an exception, shortened: enough to tell 'offline' from 'corrupt file'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def torchvision_cache_file(url: str) -> Path:
    """Where ``torch.hub`` keeps (or would keep) the file behind a torchvision weights URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_weights_error(name: str, weights, exc: BaseException) -> UserError:
    """One line for a torchvision weights file that could not be fetched or read."""
    target = torchvision_cache_file(weights.url)
    return UserError(
        f"pretrained weights for {name} could not be loaded ({_reason(exc)}): download {weights.url} "
        f"to {target} (or run once with internet access), {_HINT_FALSE}"
    )


def hf_cached(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> bool:
    """Whether the Hugging Face cache holds ``repo_id`` with at least one of ``filenames``."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, filename, revision=revision)
        except Exception:  # malformed cache entries count as absent
            hit = None
        if isinstance(hit, str):
            return True
    return False


def hub_weights_error(name: str, repo_id: str, exc: BaseException) -> UserError:
    """One line for weights on the Hugging Face Hub that could not be fetched."""
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else ""
    return UserError(
        f"pretrained weights for {name} could not be loaded ({_reason(exc)}): run once with internet access"
        f"{offline} to cache the Hugging Face repo {repo_id} (or copy it into $HF_HOME/hub), {_HINT_FALSE}"
    )


def smp_encoder_repo(encoder_name: str) -> tuple[str, str | None]:
    """(repo_id, revision) of smp's ImageNet weights for an smp encoder name (e.g. ``resnet50``)."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder_name]["pretrained_settings"]["imagenet"]
    return settings["repo_id"], settings.get("revision")


def package_installed(module: str) -> bool:
    """Whether an importable top-level module is installed (without importing it)."""
    return importlib.util.find_spec(module) is not None
