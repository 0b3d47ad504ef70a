"""objalign: measure how object-level vision embeddings align with language embeddings."""

__version__ = "0.1.0"
