"""The report card's two renderings keep every string inert and fetch nothing: a card whose every string is markup
renders, in HTML, as text with no element of its own and no URL but data: ones and anchors, under a policy that
forbids fetches and scripts; in Markdown (rendered by Python-Markdown, as a docs site or a forge would) the same."""

import re
from html.parser import HTMLParser

import markdown
import pytest

from qkv.report.card import Audio, Card, Example, Examples, Pairs, Picture, Pre, Section, Table, Text
from qkv.report.render import CSP, fenced, md_text, to_html, to_markdown

XSS = "<img src=x onerror=alert(1)>"
# a 1×1 PNG: the smallest picture that is one
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8"
                    "cfc000000301010018dd8db00000000049454e44ae426082")


def wav_bytes(n: int = 160) -> bytes:
    """A WAV file of n silent 16-bit samples at 16 kHz."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * n)
    return buf.getvalue()


class Parsed(HTMLParser):
    """The elements (tag, attrs) of a page and its text."""

    def __init__(self, page: str):
        super().__init__()
        self.elements, self.text = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def tags(self, name):
        return [a for t, a in self.elements if t == name]


def card_of_markup() -> Card:
    """A card with model text (markup) in every string of every block kind."""
    return Card(f"run {XSS}", f"summary {XSS}", [
        Section("one", f"title {XSS}", [
            Text(f"text {XSS}"), Pairs([(f"key {XSS}", f"value {XSS}")]),
            Table([f"col {XSS}", "n"], [[f"cell {XSS} | pipe", "1.5"]]), Pre(f"pre {XSS} ```", f"summary {XSS}"),
            Picture(PNG, f"alt {XSS}", f"caption {XSS}", link="loss.png"),
            Examples([Example([(f"label {XSS}", f"output {XSS}\n```\nmore")], Picture(PNG, f"alt {XSS}"))]),
            Examples([Example([("prompt", f"a {XSS}"), ("continuation", f"b {XSS}")])], table=True),
            Audio(wav_bytes(), f"recording {XSS}", f"where {XSS}"),
            Examples([Example([("transcript", f"heard {XSS}")], audio=Audio(wav_bytes(), f"clip {XSS}"))], columns=3),
        ])], footer=f"footer {XSS}")


def test_html_shows_markup_as_text_and_makes_no_element_of_it():
    page = to_html(card_of_markup())
    parsed = Parsed(page)
    text = "".join(parsed.text)
    assert text.count(XSS) >= 12  # every string, as characters
    assert all(img["src"].startswith("data:image/png;base64,") for img in parsed.tags("img"))
    assert len(parsed.tags("img")) == 2  # the two pictures, nothing else
    assert not any("onerror" in attrs for _, attrs in parsed.elements)
    assert XSS not in page  # only ever escaped
    # the alt texts are attribute values, escaped: the parser gives them back whole
    assert {img["alt"] for img in parsed.tags("img")} == {f"alt {XSS}"}


def test_html_is_one_file_that_may_fetch_and_run_nothing():
    page = to_html(card_of_markup())
    parsed = Parsed(page)
    assert not parsed.tags("script") and not parsed.tags("link") and not parsed.tags("iframe")
    urls = [v for _, attrs in parsed.elements for k, v in attrs.items() if k in ("src", "href", "action", "srcset")]
    assert urls and all(u.startswith(("data:", "#")) for u in urls), urls
    csp = [a for a in parsed.tags("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [{"http-equiv": "Content-Security-Policy", "content": CSP}]
    assert "default-src 'none'" in CSP and "script-src" not in CSP  # no script source at all: none may run
    assert "url(" not in page and "@import" not in page  # the CSS loads nothing either


def test_markdown_renders_markup_as_text():
    md = to_markdown(card_of_markup())
    rendered = markdown.markdown(md, extensions=["tables", "fenced_code"])
    parsed = Parsed(rendered)
    assert [img["src"] for img in parsed.tags("img")] == ["loss.png"]  # the one picture that is a file
    assert not any("onerror" in attrs for _, attrs in parsed.elements)
    assert "".join(parsed.text).count(XSS) >= 12
    # the table kept its two columns: the pipe inside a cell did not split it
    assert [len(re.findall("<td", row)) for row in re.findall(r"<tr>(.*?)</tr>", rendered, flags=re.S)
            if "<td" in row] == [2, 2]
    # the example's backticks did not close its code block early: "more" is still code
    block = re.search(r"<code>output (.*?)</code>", rendered, flags=re.S)
    assert block and block[1].endswith("\n```\nmore\n")


@pytest.mark.parametrize("text, expected", [
    ("a|b", r"a\|b"), ("<b>", "&lt;b&gt;"), ("a_b*c", r"a\_b\*c"), ("# heading", r"\# heading"),
    ("- item", r"\- item"), ("1. item", r"1\. item"), ("---", r"\---"), ("-0.96", "-0.96"), ("chrf++", "chrf++"),
    ("two\nlines", "two lines"), ("a & b", "a &amp; b"),
])
def test_md_text(text, expected):
    assert md_text(text) == expected


def test_a_fence_is_longer_than_any_run_of_backticks_inside():
    assert fenced("plain") == "```\nplain\n```"
    assert fenced("a ``` b").startswith("````\n") and fenced("a ``` b").endswith("\n````")
    assert fenced("`````").startswith("``````\n")


def test_a_recording_is_an_inline_player_the_reader_starts_and_a_note_in_markdown():
    card = card_of_markup()
    parsed = Parsed(to_html(card))
    players = parsed.tags("audio")
    assert len(players) == 2  # the Audio block and the example's recording
    for a in players:
        assert a["src"].startswith("data:audio/wav;base64,UklGR")  # a whole WAV file ("RIFF"), inline
        assert "controls" in a and "autoplay" not in a
    assert {a["aria-label"] for a in players} == {f"recording {XSS}", f"clip {XSS}"}
    assert "media-src data:" in CSP  # the page's policy plays data: recordings and fetches nothing
    md = to_markdown(card)
    rendered = Parsed(markdown.markdown(md, extensions=["tables", "fenced_code"]))
    text = "".join(rendered.text)
    assert f"recording in report.html: recording {XSS}" in text and f"where {XSS}" in text
    assert f"heard {XSS}" in text and not rendered.tags("audio") and "base64" not in md
