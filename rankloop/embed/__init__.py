"""rankloop.embed: the shared embedding layer (encoders, FAISS vector indexes, multi-vector index).

Everything in rankloop that holds vectors goes through here: document and query embeddings
for retrieval and PRF, token vectors for late interaction, item factors and arm features.
"""

from rankloop.embed.encoders import DEFAULT_MODEL, Encoder, TokenEmbeddings, resolve_model
from rankloop.embed.gpu import default_device, gpu_available, num_gpus
from rankloop.embed.index import VectorIndex
from rankloop.embed.multivector import MultiVectorIndex

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "MultiVectorIndex",
    "TokenEmbeddings",
    "VectorIndex",
    "default_device",
    "gpu_available",
    "num_gpus",
    "resolve_model",
]
