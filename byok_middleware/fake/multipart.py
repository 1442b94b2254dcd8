"""A small, exact `multipart/form-data` parser (stdlib only; parts keep their bytes verbatim)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message


@dataclass(frozen=True)
class FormPart:
    """One multipart part: field `name`, its `data`, optional `filename` and `content_type`."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def text(self) -> str:
        """The part's bytes decoded as UTF-8 (undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Parse a header like `multipart/form-data; boundary=x` into (lower-case value, params)."""
    message = Message()
    message["x"] = value
    params = message.get_params(header="x") or []
    main = params[0][0].lower() if params else ""
    rest = {str(key).lower(): str(val) for key, val in params[1:]}
    return main, rest


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """Return the parts of a `multipart/form-data` body; [] when it is not one or is malformed."""
    media_type, params = header_params(content_type)
    boundary = params.get("boundary")
    if media_type != "multipart/form-data" or not boundary:
        return []
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[FormPart] = []
    # Chunks between delimiters; the first is the preamble, the one starting "--" the epilogue.
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        part = _parse_part(chunk)
        if part is not None:
            parts.append(part)
    return parts


def _parse_part(chunk: bytes) -> FormPart | None:
    chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
    head, separator, data = chunk.partition(b"\r\n\r\n")
    if not separator:
        return None
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    _, disposition = header_params(headers.get("content-disposition", ""))
    field_name = disposition.get("name")
    if field_name is None:
        return None
    return FormPart(
        name=field_name,
        data=data,
        filename=disposition.get("filename"),
        content_type=headers.get("content-type"),
    )
