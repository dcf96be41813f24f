"""Device detection for the embedding layer: FAISS GPUs for indexes, torch devices for encoders."""

from __future__ import annotations

import faiss


def num_gpus() -> int:
    """GPUs visible to FAISS (always 0 with `faiss-cpu`)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def gpu_available() -> bool:
    """True when FAISS was built with GPU support and sees at least one GPU."""
    return num_gpus() > 0


def default_device() -> str:
    """The torch device an encoder should use: "cuda" when torch sees a GPU, else "cpu"."""
    import torch  # deferred: torch is slow to import and only encoders need it

    return "cuda" if torch.cuda.is_available() else "cpu"
