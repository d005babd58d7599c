"""Reading the user's text files: one reader, so every task refuses bad files the same way.

`read_text(path)` returns the text of a UTF-8 file (gzip-compressed or not, a leading byte-order mark
dropped), or raises a one-line `QKVError` that names the file and what is wrong with it: missing, empty
(or only whitespace), binary (NUL bytes), a broken gzip stream, or not UTF-8 (with the first bad byte and
its offset).

    >>> decode_text("naïve".encode(), "x.txt")
    'naïve'
"""

from __future__ import annotations

import gzip
from pathlib import Path

from qkv.errors import QKVError


def decode_text(data: bytes, source: str | Path) -> str:
    """UTF-8 text from a file's bytes (gunzipped if they are gzip, BOM dropped), or a QKVError saying why not."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise QKVError(f"{source}: broken gzip file ({e})") from None
    if not data.strip():
        raise QKVError(f"{source}: file is empty")
    if b"\x00" in data[:8192]:
        raise QKVError(f"{source}: looks binary (contains NUL bytes), expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise QKVError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (plain or .gz); QKVError if it is missing, empty, binary or not UTF-8."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise QKVError(f"file not found: {path}")
    return decode_text(path.read_bytes(), path)
