"""How long an uploaded audio file plays, for pricing speech-to-text per second.

Transcripts in ``text``/``srt``/``vtt`` (and Groq's plain ``json``) carry no duration, so the
gateway measures the upload itself (providers.md §1.7, §11.10) with ``mutagen``, which reads the
length of WAV, MP3, FLAC, OGG/Opus, M4A/MP4, AAC and more from their headers without decoding.
"""

from __future__ import annotations

import logging
import math

import mutagen

from byok_middleware.proxy.multipart import ChunkReader

__all__ = ["audio_seconds"]

logger = logging.getLogger("byok_middleware.proxy.audio")


def audio_seconds(chunks: list[bytes]) -> float | None:
    """The play time of the audio file held in ``chunks``, or ``None`` when it cannot be read."""
    try:
        parsed = mutagen.File(ChunkReader(chunks))
    except Exception:  # any failure to parse an untrusted upload just means "unknown length"
        logger.debug("could not read the audio length of an upload", exc_info=True)
        return None
    info = getattr(parsed, "info", None)
    length = getattr(info, "length", None)
    if isinstance(length, int | float) and math.isfinite(length) and length > 0:
        return float(length)
    return None
