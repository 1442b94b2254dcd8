"""Multipart uploads (audio transcriptions): read, bounded, and re-sent without copying the file.

The request is parsed incrementally with the ``multipart`` package's sans-I/O
``PushMultipartParser`` (the parser Litestar and Bottle use) as the ASGI body arrives. Text
fields are kept in order, byte for byte; the uploaded file is kept once, as the list of chunks
the parser produced. The upstream body is then generated from those same chunks (``UpstreamForm``)
with one field replaced (``model``, without its provider prefix), and ``ChunkReader`` lets an audio
library read the file in place.
"""

from __future__ import annotations

import bisect
import io
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import multipart  # type: ignore[import-untyped]  # ships no type information

from byok_middleware.asgi import Receive, Scope, header
from byok_middleware.errors import InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["ChunkReader", "FileField", "Form", "TextField", "UpstreamForm", "read_form"]

MAX_PARTS = 256


@dataclass(slots=True)
class TextField:
    name: str
    value: bytes

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", "replace")


@dataclass(slots=True)
class FileField:
    name: str
    filename: str
    content_type: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class Form:
    """A parsed ``multipart/form-data`` body: its fields in order, files included."""

    parts: list[TextField | FileField]

    def value(self, name: str) -> str | None:
        """The first text field called ``name``, or ``None``."""
        for part in self.parts:
            if isinstance(part, TextField) and part.name == name:
                return part.text
        return None

    def file(self, name: str) -> FileField | None:
        for part in self.parts:
            if isinstance(part, FileField) and part.name == name:
                return part
        return None

    def replaced(self, values: Mapping[str, str]) -> UpstreamForm:
        """The upstream body: these parts, with the text fields named in ``values`` replaced."""
        parts = [
            TextField(part.name, values[part.name].encode())
            if isinstance(part, TextField) and part.name in values
            else part
            for part in self.parts
        ]
        return UpstreamForm(parts)


def _quote(value: str) -> str:
    # WHATWG's escaping for multipart/form-data names and filenames.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class UpstreamForm:
    """A ``multipart/form-data`` body generated from parts, with a known length."""

    def __init__(self, parts: list[TextField | FileField]) -> None:
        self.boundary = "byok-" + uuid.uuid4().hex
        self._pieces: list[bytes | FileField] = []
        for part in parts:
            disposition = (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(part.name)}"'
            )
            if isinstance(part, TextField):
                self._pieces.append(f"{disposition}\r\n\r\n".encode() + part.value + b"\r\n")
                continue
            head = (
                f'{disposition}; filename="{_quote(part.filename)}"\r\n'
                f"Content-Type: {part.content_type}\r\n\r\n"
            )
            self._pieces += [head.encode(), part, b"\r\n"]
        self._pieces.append(f"--{self.boundary}--\r\n".encode())
        self.length = sum(p.size if isinstance(p, FileField) else len(p) for p in self._pieces)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def headers(self) -> dict[str, str]:
        return {"content-type": self.content_type, "content-length": str(self.length)}

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, the file's chunks passed on as they are (a fresh iterator per call)."""
        for piece in self._pieces:
            if isinstance(piece, FileField):
                for chunk in piece.chunks:
                    yield chunk
            else:
                yield piece


class ChunkReader(io.RawIOBase):
    """A read-only, seekable file over a list of byte chunks (no copy of the whole)."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = [chunk for chunk in chunks if chunk]
        self._starts: list[int] = []
        total = 0
        for chunk in self._chunks:
            self._starts.append(total)
            total += len(chunk)
        self._size = total
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        target = memoryview(buffer).cast("B")
        written = 0
        while written < len(target) and self._position < self._size:
            index = bisect.bisect_right(self._starts, self._position) - 1
            chunk = self._chunks[index]
            offset = self._position - self._starts[index]
            count = min(len(chunk) - offset, len(target) - written)
            target[written : written + count] = chunk[offset : offset + count]
            written += count
            self._position += count
        return written


def _boundary(scope: Scope) -> str:
    media_type, options = multipart.parse_options_header(header(scope, b"content-type") or "")
    boundary = options.get("boundary")
    if media_type != "multipart/form-data" or not boundary:
        raise InvalidRequest(
            "the request must be multipart/form-data with a boundary (fields 'file' and 'model')"
        )
    return str(boundary)


class _FormBuilder:
    """Collects parser events into a ``Form``, enforcing the size limits."""

    def __init__(self, max_file_bytes: int, max_field_bytes: int) -> None:
        self.parts: list[TextField | FileField] = []
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self._field_bytes = 0
        self._current: TextField | FileField | None = None
        self._text: list[bytes] = []

    def start(self, segment: multipart.MultipartSegment) -> None:
        name = segment.name
        if segment.disposition != "form-data" or name is None:
            raise InvalidRequest("every multipart part needs 'Content-Disposition: form-data'")
        if segment.filename is not None:
            content_type = segment.content_type or "application/octet-stream"
            self._current = FileField(name, segment.filename, content_type)
        else:
            self._current = TextField(name, b"")
            self._text = []

    def data(self, chunk: bytes) -> None:
        part = self._current
        if isinstance(part, FileField):
            part.size += len(chunk)
            if part.size > self.max_file_bytes:
                raise PayloadTooLarge(
                    f"the uploaded file exceeds the limit of {self.max_file_bytes} bytes",
                    param=part.name,
                )
            part.chunks.append(chunk)
        elif part is not None:
            self._field_bytes += len(chunk)
            if self._field_bytes > self.max_field_bytes:
                raise PayloadTooLarge(
                    f"the form's text fields exceed the limit of {self.max_field_bytes} bytes"
                )
            self._text.append(chunk)

    def end(self) -> None:
        part = self._current
        if isinstance(part, TextField):
            part.value = b"".join(self._text)
        if part is not None:
            self.parts.append(part)
        self._current = None


async def read_form(
    scope: Scope, receive: Receive, *, max_file_bytes: int, max_field_bytes: int
) -> Form:
    """Read and parse the request's multipart body.

    Raises ``InvalidRequest`` (400) for a body that is not well-formed multipart/form-data and
    ``PayloadTooLarge`` (413) for a file over ``max_file_bytes`` or text fields over
    ``max_field_bytes`` in total; a declared ``Content-Length`` over both is refused unread.
    """
    boundary = _boundary(scope)
    declared = header(scope, b"content-length")
    limit = max_file_bytes + max_field_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload exceeds the limit of {max_file_bytes} bytes")
    builder = _FormBuilder(max_file_bytes, max_field_bytes)
    try:
        with multipart.PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
            while not parser.closed:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise InvalidRequest("the client disconnected before sending the body")
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                for event in parser.parse(chunk) if chunk else ():
                    if event is None:
                        builder.end()
                    elif isinstance(event, multipart.MultipartSegment):
                        builder.start(event)
                    else:
                        builder.data(event)
                if not more:
                    break
    except multipart.ParserLimitReached:
        raise PayloadTooLarge(
            f"the multipart body has more than {MAX_PARTS} parts or an oversized part header"
        ) from None
    except multipart.MultipartError:
        raise InvalidRequest("the multipart/form-data body is malformed or incomplete") from None
    return Form(builder.parts)
