"""ragtune: fine-tune the retrieval parts of a RAG system on your own documents."""

from ragtune.config import RunConfig
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.errors import ConfigError, DataFormatError, MissingExtraError, RagtuneError

__version__ = "0.1.0"

__all__ = [
    "BeirDataset",
    "ConfigError",
    "DataFormatError",
    "MissingExtraError",
    "RagtuneError",
    "RunConfig",
    "load_beir",
    "__version__",
]
