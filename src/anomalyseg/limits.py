"""Upper bounds of sizes and counts given on the command line or in a config (torch-free, imported at start-up).

They exist so that a typo ends in one line naming the bound instead of an allocation of hundreds of GiB or a
run that never ends; each is far above any real use.
"""

#: Largest image side (pixels) of a model input, crop or resize: 4x StreetHazards' 1280 and 4x Cityscapes'
#: 2048 still fit. One float32 8192x8192 RGB image is 0.8 GB before the model sees it.
MAX_SIDE = 8192
#: Largest side of a synthetic image: drawing one takes ~100 bytes per pixel, ~1.7 GB at 4096x4096.
MAX_SYNTH_SIDE = 4096
#: Images per batch.
MAX_BATCH = 4096
#: Worker processes (data loading, decoding, drawing).
MAX_WORKERS = 256
#: Figure resolution (dots per inch): a 3x3 panel at 600 dpi is already ~9000x6000 pixels.
MAX_DPI = 600
#: Counts that only a typo makes larger (steps, iterations, samples).
MAX_COUNT = 10**9
#: Random seeds: numpy takes 0 .. 2**63 - 1 here (a negative seed is refused by numpy's generators).
MAX_SEED = 2**63 - 1


def env_number(name: str, default: float, lo: float, hi: float) -> float:
    """The number in environment variable ``name`` clamped to ``[lo, hi]``; ``default`` when unset or not a
    number (a tuning knob must never stop a command)."""
    import os

    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        value = float(default)
    return min(max(value, lo), hi)
