"""The report card of a speech run (tests/serve_fixtures.py's tiny transcriber, which learned FSDD's "zero", "one"
and "two" of one speaker, and a CTC one): the headline is WER and CER; each sample is a recording the page plays
(a WAV data URL in an <audio controls>), the model's transcript and the reference, named in the Markdown; the
attention picture is the cross-attention drawn under the spectrogram, and a CTC run says why it has none."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import struct
from html.parser import HTMLParser

import markdown
import pytest

from qkv import load_run
from qkv.cli.main import main

WAV_URL = "data:audio/wav;base64,"


class Page(HTMLParser):
    """A report page read back: per section (id), its text and its <img> and <audio> elements' attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.elements: list[tuple[str, dict]] = []
        self.summary = ""
        self._current, self._in_p = None, False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "section":
            self._current = self.sections.setdefault(attrs["id"], {"text": "", "img": [], "audio": []})
        elif tag in ("img", "audio") and self._current is not None:
            self._current[tag].append(attrs)
        self._in_p = tag == "p" and self._current is None and not self.summary

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self._current["text"] += data
        elif self._in_p:
            self.summary += data


@pytest.fixture(scope="module")
def reports(more_runs, ctc_speech_run, tmp_path_factory) -> dict:
    """`qkv report` of the speech run and of a CTC run trained 4 steps on the same folder: {name: {html, md, page}}."""
    folder = tmp_path_factory.mktemp("speech-reports")
    ctc = ctc_speech_run
    out = {}
    for name, run in (("speech", more_runs["speech"]), ("ctc", ctc)):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["report", str(run), "--out", str(folder / f"{name}-card")]) == 0
        html = (folder / f"{name}-card" / "report.html").read_text(encoding="utf-8")
        out[name] = {"html": html, "page": Page(html), "run": run,
                     "md": (folder / f"{name}-card" / "report.md").read_text(encoding="utf-8")}
    return out


def wav_seconds(url: str) -> float:
    """The length of a 16-bit mono WAV data URL (its data chunk, as the header of write_wav gives it)."""
    assert url.startswith(WAV_URL)
    data = base64.b64decode(url.removeprefix(WAV_URL))
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    channels, rate = struct.unpack("<HI", data[22:28])
    assert (channels, rate) == (1, 16000)
    return (len(data) - 44) / 2 / rate


def test_the_headline_is_wer_and_cer(reports):
    metrics = [json.loads(line) for line in (reports["speech"]["run"] / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in metrics if "val_wer" in r][-1]
    headline = f"validation WER {100 * last['val_wer']:.2f}%, CER {100 * last['val_cer']:.2f}% (step {last['step']})"
    page = reports["speech"]["page"]
    assert headline in page.summary and headline in reports["speech"]["md"].split("\n## ")[0]
    assert f"Headline: {headline}" in page.sections["evaluations"]["text"]


def test_each_sample_plays_its_recording_beside_transcript_and_reference(reports):
    r = reports["speech"]
    samples = r["page"].sections["samples"]
    players = samples["audio"]
    assert len(players) == 3 and not samples["img"]
    for k, a in enumerate(players, 1):
        assert "controls" in a and "autoplay" not in a
        assert 0.3 < wav_seconds(a["src"]) <= 3.0  # an FSDD digit, at most what the model reads
        assert a["aria-label"].startswith(f"recording {k} (")
    text = samples["text"]
    assert text.count("transcript") == 3 and text.count("reference") >= 3
    run = load_run(r["run"])
    sources = run.example_sources(3)
    shown = text.split("transcript")[1:]  # one piece per sample: its transcript, then its reference
    for piece, hyp, ref in zip(shown, run.to_text(sources), [r.text for r in run.validation()[0].items[:3]],
                               strict=True):
        assert piece.startswith(hyp) and f"reference{ref}" in piece  # what the run writes, and the truth beside it
    # the Markdown names each recording, where it comes from, the model's transcript and the reference
    md = r["md"].split("## Samples", 1)[1].split("\n## ", 1)[0]
    assert "*(recording in report.html: recording 1 (" in md and "pair 1 of" in md and "(validation))*" in md
    assert md.count("transcript:\n\n```") == 3 and md.count("reference:\n\n```") == 3
    assert "base64" not in r["md"]
    rendered = markdown.markdown(r["md"], extensions=["tables", "fenced_code"])
    assert "<audio" not in rendered and "recording in report.html" in rendered


def test_the_attention_picture_is_drawn_over_the_spectrogram(reports):
    att = reports["speech"]["page"].sections["attention"]
    (picture,) = att["img"]
    assert picture["src"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert picture["alt"] == "cross-attention, decoder layer 0, mean over heads"
    run = load_run(reports["speech"]["run"])
    said = run.to_text(run.example_sources(1))[0]  # the run's own transcript of the recording drawn
    assert "log-mel spectrogram on top" in att["text"] and f"transcript: {said}" in att["text"]
    assert len(att["audio"]) == 1  # the recording the picture is of, to listen to beside it
    # the page is one file: every picture and recording inline, nothing to fetch
    page = reports["speech"]["page"]
    urls = [v for tag, attrs in page.elements for k, v in attrs.items() if k in ("src", "href")]
    assert urls and all(u.startswith(("data:", "#")) for u in urls)
    assert not any(tag in ("script", "link", "iframe", "source") for tag, _ in page.elements)


def test_a_ctc_run_has_samples_but_says_why_it_has_no_attention_picture(reports):
    page = reports["ctc"]["page"]
    assert len(page.sections["samples"]["audio"]) == 3
    att = page.sections["attention"]
    assert not att["img"] and not att["audio"]
    assert att["text"].endswith("no attention picture: ctc is a CTC run: it has no decoder, so no cross-attention")
    assert "validation WER " in page.summary  # a CTC run logs WER and CER too
