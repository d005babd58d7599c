"""The transcribe page in a real browser (headless Chromium through Playwright) on the tiny speech run
(tests/serve_fixtures.py: FSDD "zero", "one", "two" of one speaker): a recording from the microphone — Chromium's
fake one, playing a real FSDD clip — is captured by the page's AudioWorklet, written as a 16 kHz WAV file
(wav.js) and transcribed, with its cross-attention drawn over the spectrogram; an uploaded WAV file is transcribed
as it is; a file that is not a WAV gets the server's one-line error in the page; a CTC run shows its transcript and
says it has no cross-attention.

These pages run under the server's own Content-Security-Policy (the shared `page` fixture turns it off for
Playwright's string waits): the recorder's worklet module must load from this server, so only locator waits here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from browser import launch_or_skip
from qkv.data.audio import SAMPLE_RATE
from qkv.data.speech import DIGIT_WORDS, clip_wave
from qkv.server import ServeConfig, create_app, load_runs
from serve_fixtures import LiveServer
from speech_fixtures import digit_clips

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def write_wav(path, x: np.ndarray, rate: int = SAMPLE_RATE):
    from scipy.io import wavfile

    wavfile.write(path, rate, np.clip(np.round(x * 32768), -32768, 32767).astype("<i2"))
    return path


@pytest.fixture(scope="module")
def clip():
    """FSDD "zero" (speaker jackson, take 10): one of the 30 recordings the tiny run learned."""
    return digit_clips(digits=(0,), takes=(10,))[0]


@pytest.fixture(scope="module")
def microphone(clip, tmp_path_factory):
    """What the fake microphone plays, once (``%noloop``): 0.2 s of silence, the clip, then silence."""
    x = clip_wave(clip).numpy()
    pad = np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.float32)
    return write_wav(tmp_path_factory.mktemp("mic") / "zero.wav", np.concatenate([pad, x, pad, pad, pad]))


@pytest.fixture(scope="module")
def browser(microphone):
    """Headless Chromium with a fake microphone that plays `microphone` and asks no permission."""
    with sync_api.sync_playwright() as p:
        b = launch_or_skip(p, ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                               f"--use-file-for-fake-audio-capture={microphone}%noloop"))
        yield b
        b.close()


@pytest.fixture(scope="module")
def ctc_run(more_runs, tmp_path_factory):
    """A CTC transcriber (no decoder) trained 4 steps: a transcript to show, no cross-attention."""
    from helpers import preset
    from serve_fixtures import _train
    from speech_fixtures import SPEECH_ARGS

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(["--config", preset("fsdd-digits"), "--data.source", str(more_runs["speech"].parent /
                       "speech-data"), *SPEECH_ARGS, "--model.head", "ctc", "--model.n_decoder_layers", "0",
                       "--train.max_steps", "4", "--train.decay_steps", "4", "--train.warmup_steps", "1",
                       "--train.eval_interval", "4", "--train.full_eval_interval", "4"],
                      tmp_path_factory.mktemp("ctc") / "ctc")
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def server(more_runs, ctc_run):
    runs = load_runs([more_runs["speech"], ctc_run])
    with LiveServer(create_app(runs, ServeConfig())) as url:
        yield url, runs


@pytest.fixture
def strict_page(browser, server, tmp_path):
    """A page under the server's Content-Security-Policy that fails its test on any JavaScript error."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["microphone"], origin=url)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_default_timeout(20_000)
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert not page.errors, page.errors


def open_transcribe(page, url: str, name: str = "speech"):
    page.goto(f"{url}/runs/{name}/transcribe")
    page.wait_for_selector("#audio-source:not([hidden])")
    expect(page.locator("h1")).to_have_text("Transcribe a recording")
    expect(page.locator("#recording")).to_contain_text("Record up to")
    assert page.locator("#text-source[hidden]").count() == 1 and page.locator("#image-source[hidden]").count() == 1


def test_a_recording_from_the_microphone_is_transcribed_with_its_attention_over_the_spectrogram(server, strict_page):
    url, _ = server
    page = strict_page
    open_transcribe(page, url)
    page.click("#record")
    expect(page.locator("#stop")).to_be_enabled()
    expect(page.locator("#recording")).to_have_text(re.compile(r"recording… (0\.[89]|1\.\d) s"))  # past the clip
    page.click("#stop")
    expect(page.locator("#recording")).to_have_text(re.compile(r"recorded \d\.\d\d s"))
    page.wait_for_selector("#nbest li")
    assert page.inner_text("#nbest li .hyp") == "zero"
    assert "the recording:" in page.inner_text("#notes") and "resampled in the page to 16000 Hz" in \
        page.inner_text("#notes")
    canvas = page.locator("#attention canvas#spectrogram")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert box["width"] > 300 and box["height"] > 160 + 5 * 16  # the spectrogram, then a row per character
    assert [b.inner_text() for b in page.locator("#attention .words button").all()] == [*"zero", "<eos>"]
    expect(page.locator("#stats")).to_contain_text("decoder layer 0, mean over heads")
    page.select_option("#head", "1")
    expect(page.locator("#stats")).to_contain_text("head 1")
    page.click("#attention .words button >> nth=2")  # "r"
    expect(page.locator("#stats")).to_contain_text("where “r” listened")
    expect(page.locator("#record")).to_be_enabled()


def test_an_uploaded_wav_is_transcribed_with_the_n_best(server, strict_page, clip):
    url, _ = server
    page = strict_page
    open_transcribe(page, url)
    page.fill("#beam", "3")
    page.set_input_files("#wavfile", str(clip.path))  # FSDD as it ships: 8 kHz, resampled by the server
    page.wait_for_selector("#nbest li")
    assert page.inner_text("#nbest li .hyp >> nth=0") == DIGIT_WORDS[clip.digit]
    assert page.locator("#nbest li").count() >= 2 and "log P" in page.inner_text("#nbest li >> nth=0")
    expect(page.locator("#notes")).to_contain_text("the upload: 8000 Hz, resampled to 16000 Hz")
    expect(page.locator("#attention canvas#spectrogram")).to_be_visible()
    expect(page.locator("#stats")).to_contain_text("beam 3")


def test_a_file_that_is_not_a_wav_gets_the_servers_one_line_error(server, strict_page, tmp_path):
    url, _ = server
    page = strict_page
    open_transcribe(page, url)
    notes = tmp_path / "notes.wav"
    notes.write_text("these are my notes, not a recording\n", encoding="utf-8")
    page.set_input_files("#wavfile", str(notes))
    expect(page.locator("#error")).to_have_text(
        "audio: the upload: not a WAV file (it starts with the text 'these are my notes, not ')")
    assert page.locator("#nbest li").count() == 0


def test_a_ctc_run_shows_its_transcript_and_says_it_has_no_cross_attention(server, strict_page, clip):
    url, runs = server
    page = strict_page
    open_transcribe(page, url, "ctc")
    page.set_input_files("#wavfile", str(clip.path))
    page.wait_for_selector("#nbest li")
    want = runs["ctc"].run.to_text([str(clip.path)])[0]
    assert page.inner_text("#nbest li .hyp") == (want or "(empty)")
    expect(page.locator("#attention")).to_have_text("ctc is a CTC run: it has no decoder, so no cross-attention")
    expect(page.locator("#stats")).to_contain_text("greedy CTC")
    assert page.locator("#attention canvas").count() == 0
