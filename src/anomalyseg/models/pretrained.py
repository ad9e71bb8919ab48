"""Where pretrained weights come from, whether they are on this machine, and one-line errors when not.

Nothing here downloads: the real loading stays in the libraries (torchvision weight enums, smp
``encoder_weights``, ``from_pretrained``); these helpers only look into their caches and word failures.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from anomalyseg.errors import UserError, first_line
from anomalyseg.limits import env_number

_HINT_FALSE = "or set `pretrained: false`"


def _reason(exc: BaseException) -> str:
    """First line of an exception, shortened: enough to tell 'offline' from 'corrupt file'."""
    text = first_line(exc)
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


# --- failing fast without internet ---------------------------------------------------------------------------
# huggingface_hub and torch.hub retry an unreachable host for a minute or more (measured here: 93 s for
# SegFormer, 23 s for smp) before the error arrives. Before a download that the caches cannot serve, one TCP
# connection to the host (through the https proxy when one is configured), bounded in time, decides: a host
# that cannot be reached gives a one-line error at once; a reachable one goes through the libraries' own
# download path unchanged.

#: Seconds one reachability probe may take (name lookup + TCP connect); ``ANOMALYSEG_NET_TIMEOUT`` changes it.
PROBE_TIMEOUT = 3.0


def probe_timeout() -> float:
    """The probe's time bound in seconds (``ANOMALYSEG_NET_TIMEOUT``, default 3, at most 30)."""
    return env_number("ANOMALYSEG_NET_TIMEOUT", PROBE_TIMEOUT, 0.1, 30.0)


def hf_endpoint() -> str:
    """The Hugging Face endpoint downloads go to (``HF_ENDPOINT``, default https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids Hugging Face downloads."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _probe_target(url: str) -> tuple[str, int]:
    """(host, port) a download of ``url`` first connects to: the proxy when urllib's settings name one."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or host, proxy_parts.port or (443 if proxy_parts.scheme == "https" else 80)
    return host, port


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """Why ``url``'s host cannot be reached within ``timeout`` seconds, or ``None`` when it can.

    Name lookup and connect run in a daemon thread, so a hanging resolver cannot hold the caller longer.
    """
    import socket
    import threading

    timeout = probe_timeout() if timeout is None else timeout
    host, port = _probe_target(url)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(_reason(exc))

    thread = threading.Thread(target=probe, name="anomalyseg-net-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def require_reachable(name: str, url: str, source: str) -> None:
    """Raise a one-line :class:`UserError` at once when the weights of ``name`` (not on this machine) would be
    fetched from ``url`` and its host cannot be reached; return when it can (the library then downloads)."""
    if source == "hf" and hf_offline():
        raise UserError(
            f"pretrained weights for {name} could not be loaded (not in the Hugging Face cache and HF_HUB_OFFLINE "
            f"is set): run once with internet access to cache {url}, {_HINT_FALSE}")
    why = unreachable(url)
    if why is None:
        return
    from urllib.parse import urlsplit

    where = (f"download {url} to {torchvision_cache_file(url)} (or run once with internet access)"
             if source == "torch" else f"run once with internet access to cache {url}")
    raise UserError(
        f"pretrained weights for {name} could not be loaded ({urlsplit(url).hostname} cannot be reached: {why}): "
        f"{where}, {_HINT_FALSE}")
