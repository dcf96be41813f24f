"""A static word-piece encoder derived from a transformer's input embeddings.

`static_encoder_from(model, out)` saves a sentence-transformers model made of one
``StaticEmbedding`` module: the transformer's tokenizer and its input (word-piece) embedding
matrix, mean-pooled. It needs no training and encodes tens of thousands of texts per second on
one core, at a fraction of the transformer's quality: it exists to exercise collection-scale
pipelines (sharding, IVF-PQ builds, memory bounds) where the transformer would take hours, not
to rank. `Encoder(str(out))` loads it like any other model.
"""

from __future__ import annotations

import os
from pathlib import Path

from rankloop.embed.encoders import Encoder
from rankloop.io import atomic_dir


def static_encoder_from(
    model: str | None, out: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Save the static word-piece encoder of `model` (default: the offline MiniLM) to `out`."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    st = Encoder(model, show_progress=False).model
    transformer = st[0].auto_model
    weights = transformer.get_input_embeddings().weight.detach().float().cpu().numpy()
    static = StaticEmbedding(st.tokenizer, embedding_weights=weights)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        SentenceTransformer(modules=[static], device="cpu").save(str(tmp))
    return Path(out)
