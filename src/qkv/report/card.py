"""What a report card is made of: sections of a few block kinds, with no markup in them.

A `Card` is a title, a one-line summary and a list of `Section`s; a section is a list of blocks:

    Text      a paragraph (a note such as "no attention picture: ..." is one too)
    Pairs     a two-column table: name, value (a config section, the machine)
    Table     columns and rows of plain strings (the evaluation records)
    Pre       preformatted text (the parameter table, `qkv eval`'s lines), folded under `summary` when it has one
    Picture   a PNG, held as its bytes; the HTML inlines it as a data: URL, the Markdown links `link` if there is
              a file to link (loss.png), else says where the picture is
    Audio     a recording, held as WAV bytes; the HTML plays it with the browser's <audio controls> from a data: URL
              (never autoplayed), the Markdown says what and where it is
    Examples  what the model made: each example a list of (label, text) fields and an optional picture or
              recording; as cards, a grid of cards, or a table (one row per example)

Every string in a block is plain text, whoever wrote it (the model, a config, a data file): `qkv.report.render`
escapes it for HTML and for Markdown, so text that looks like markup stays text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass
class Text:
    text: str


@dataclass
class Pairs:
    rows: list[tuple[str, str]]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Pre:
    text: str
    summary: str = ""  # non-empty: folded (HTML <details>) under this line


@dataclass
class Picture:
    png: bytes
    alt: str
    caption: str = ""
    link: str | None = None  # a file the Markdown links instead, relative to the report (the run's loss plot)
    width: int | None = None  # CSS pixels to show it at (None: its own size, at most the page's width)
    pixelated: bool = False  # enlarged without smoothing (small images: a 16×16 scene, an 8×8 digit)

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, from the PNG's header."""
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")


@dataclass
class Audio:
    wav: bytes  # a whole WAV file (16-bit PCM)
    label: str  # what it is: "recording 1 (0.62 s)"
    where: str = ""  # where it comes from, which the Markdown twin says instead of playing it

    def data_url(self) -> str:
        return "data:audio/wav;base64," + base64.b64encode(self.wav).decode("ascii")


@dataclass
class Example:
    fields: list[tuple[str, str]]  # (label, text): "prompt", "output", "reference", ...
    picture: Picture | None = None  # an image source, or a sampled image
    audio: Audio | None = None  # a recording source


@dataclass
class Examples:
    items: list[Example]
    columns: int = 1  # examples per row (a grid of sampled images: several)
    table: bool = False  # HTML: one row per example, one column per label (short texts side by side)


Block = Text | Pairs | Table | Pre | Picture | Audio | Examples


@dataclass
class Section:
    id: str  # the HTML anchor
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Card:
    title: str
    summary: str
    sections: list[Section] = field(default_factory=list)
    footer: str = ""
