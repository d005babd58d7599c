"""The playground in a real browser (headless Chromium through Playwright) on the tiny runs: a generation
streams and stops, a token's hover shows its top-5, model output that looks like HTML stays text, a
translation's heatmap opens and switches heads, chat edits and regenerates, the images page shows both
processes, and the attention and parameter pages draw. Screenshots go to the test's tmp folder."""

from __future__ import annotations

import pytest

from qkv.server import ServeConfig, create_app, load_runs
from serve_fixtures import XSS, LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_runs):
    runs = load_runs(list(tiny_runs.values()))
    with LiveServer(create_app(runs, ServeConfig())) as url:
        yield url, runs


def test_generation_streams_shows_the_top5_and_keeps_html_as_text(server, page):
    url, runs = server
    page.goto(f"{url}/runs/lm/generate")
    page.fill("#prompt", "<")
    page.fill("#temperature", "0")
    page.fill("#max_new_tokens", "60")
    page.click("#go")
    page.wait_for_function("document.querySelector('#stats').textContent.includes('tokens in')")
    out = page.inner_text("#output")
    assert XSS in out  # the markup the model learned is on the page, as characters
    assert page.locator("#output img").count() == 0 and page.locator("img").count() == 0
    assert not page.dialogs  # onerror=alert(1) never ran
    assert "ended: length" in page.inner_text("#stats")
    tokens = page.locator("#output .tok[data-id]")
    assert tokens.count() == 60
    tokens.nth(0).hover()
    tip = page.locator("#tip")
    tip.wait_for(state="visible")
    assert tip.locator("tr").count() == 5 and "id " in tip.inner_text()
    assert tip.locator("tr.chosen").count() == 1  # greedy: the chosen token is the most likely


def test_stop_ends_the_generation_on_the_server(server, page):
    url, runs = server
    before = runs["lm"].stats["cancelled"]
    page.goto(f"{url}/runs/lm/generate")
    page.fill("#prompt", "<")
    page.fill("#temperature", "1")
    page.fill("#max_new_tokens", "1024")
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('#output .tok[data-id]').length >= 3")
    page.click("#stopbtn")
    page.wait_for_function("document.querySelector('#stats').textContent.startsWith('stopped after')")
    n = page.locator("#output .tok[data-id]").count()
    assert n < 1024
    page.wait_for_function(f"fetch('/api/health').then(r => r.json()).then(h => h.runs.lm.cancelled > {before})")


def test_translation_heatmap_per_layer_and_head(server, page):
    url, _ = server
    page.goto(f"{url}/runs/translate/translate")
    page.fill("#text", "die eins zwei drei .")
    page.fill("#beam", "4")
    page.click("#go")
    page.wait_for_selector("#heatmap table.heat")
    assert page.locator("#nbest li").count() >= 1
    rows = page.locator("#heatmap table.heat tr").count() - 1  # a header row, then one row per produced token
    assert rows >= 1 and "mean over heads" in page.inner_text("#heatmap")
    first = page.locator("#heatmap td").first.get_attribute("title")
    page.select_option("#head", "1")
    page.wait_for_function("document.querySelector('#heatmap').textContent.includes('head 1')")
    page.select_option("#layer", "0")
    page.wait_for_function("document.querySelector('#heatmap').textContent.includes('decoder layer 0')")
    assert page.locator("#heatmap td").first.get_attribute("title") != first or rows == 1


def test_chat_edits_and_regenerates(server, page):
    url, _ = server
    page.goto(f"{url}/runs/chat/chat")
    page.fill("#temperature", "0")
    page.fill("#message", "What is 2 + 2?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant .actions")  # actions come back when the reply has ended
    assert page.locator(".msg").count() == 2
    page.click(".msg.user .actions button")  # edit the question
    page.fill(".msg.user textarea", "Who wrote Hamlet?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant .actions")
    assert page.locator(".msg").count() == 2 and page.inner_text(".msg.user .content") == "Who wrote Hamlet?"
    page.click(".msg.assistant .actions button")  # regenerate
    page.wait_for_selector(".msg.assistant .actions")
    assert page.locator(".msg").count() == 2


def test_images_page_shows_both_processes(server, page):
    url, _ = server
    page.goto(f"{url}/runs/digits/images")
    page.wait_for_function("document.querySelectorAll('#strip img').length === 8")
    page.wait_for_function("document.querySelectorAll('#forward img').length === 9")
    assert page.locator("#samples img").count() == 8
    assert "noise" in page.inner_text("#strip") and "ᾱ" in page.inner_text("#forward")
    page.select_option("#label", "7")
    page.fill("#n", "2")
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('#samples img').length === 2")


def test_attention_and_parameter_pages(server, page):
    url, _ = server
    page.goto(f"{url}/runs/lm/attention")
    page.fill("#text", "<img src=x")
    page.click("#go")
    page.wait_for_selector("#heatmap table.heat")
    assert page.locator("#heatmap table.heat tr").count() == 1 + 10  # a header, then one row per token
    page.goto(f"{url}/runs/lm/params")
    page.wait_for_selector("#table table")
    assert "total" in page.inner_text("#totals")
    page.goto(f"{url}/")
    page.wait_for_selector(".card")
    assert page.locator(".card").count() == 4


def test_the_api_docs_page_renders_offline(server, page):
    url, _ = server
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 10
    assert all(r.startswith(url) or r.startswith("data:") for r in requests), requests  # nothing from elsewhere


def test_look_inside_walks_the_topics_with_their_checks(server, page):
    url, _ = server
    page.goto(f"{url}/runs/lm/explain")
    page.wait_for_selector("#out h2")
    topics = page.locator("#topics a")
    assert topics.nth(0).inner_text() == "1. tokens"
    assert "alignment" not in page.inner_text("#topics")  # a GPT run lists only the topics that apply to it
    page.click("#topics a[data-topic=qkv]")
    page.wait_for_function("document.querySelector('#out h2') && "
                           "document.querySelector('#out h2').textContent.startsWith('qkv')")
    checks = page.locator("#out .check")
    assert checks.count() >= 1 and page.locator("#out .check.bad").count() == 0
    assert page.locator("#out figure img").count() >= 1
    page.fill("#input", "Zebra")  # a character the run's tokenizer never saw: one line, in the page
    page.click("#go")
    page.wait_for_function("document.querySelector('#error').textContent.includes('not in the')")
    page.goto(f"{url}/runs/translate/explain#topic=alignment")
    page.wait_for_function("document.querySelector('#out h2') && "
                           "document.querySelector('#out h2').textContent.startsWith('alignment')")
    assert page.locator("#out figure img").count() >= 1


# ------------------------------------------------------------------------------------------------ every run kind
@pytest.fixture(scope="module")
def every_kind(tiny_runs, more_runs):
    runs = load_runs([*tiny_runs.values(), *more_runs.values()])
    with LiveServer(create_app(runs, ServeConfig())) as url:
        yield url, runs


def test_every_page_of_every_run_kind_opens(every_kind, page):
    """The pages come from what each run can do (`pages_of`); each one opens and draws with no JavaScript error,
    the caption run's included."""
    url, runs = every_kind
    ready = {"generate": "#prompt", "chat": "#message", "translate": "#text", "caption": "#file",
             "transcribe": "#file", "images": "#strip img", "attention": "#heatmap table.heat",
             "params": "#table table", "explain": "#out h2", "code": "#example option"}
    opened = []
    for name, served in runs.items():
        for p in served.pages:
            page.goto(f"{url}/runs/{name}/{p}")
            page.wait_for_selector(f"header nav a.here >> text={p if p != 'explain' else 'look inside'}")
            page.wait_for_selector(ready[p], state="attached")
            opened.append((name, p))
    assert ("caption", "caption") in opened and ("caption", "explain") in opened and len(opened) >= 20
    page.goto(f"{url}/")
    page.wait_for_selector(".card")
    assert page.locator(".card").count() == len(runs)


def test_look_inside_a_speech_run_shows_its_recording_and_takes_an_upload(every_kind, page, tmp_path):
    """The speech run's explain page lists the audio topic; it reads the run's own recording, then an uploaded WAV
    file (a topic that reads no source is never sent it)."""
    from qkv.data.audio import write_wav

    url, runs = every_kind
    page.goto(f"{url}/runs/speech/explain#topic=audio")
    page.wait_for_function("document.querySelector('#out h2') && "
                           "document.querySelector('#out h2').textContent.startsWith('audio')")
    assert page.locator("#out .check").count() >= 5 and page.locator("#out .check.bad").count() == 0
    assert page.locator("#out figure img").count() == 1
    assert "the run's first validation recording" in page.inner_text("#audio-note")
    wave = runs["speech"].run.example_sources(2)[-1][:5923]  # 0.37 s
    write_wav(tmp_path / "short.wav", wave)
    page.set_input_files("#audio", str(tmp_path / "short.wav"))
    page.wait_for_function("document.querySelector('#out').textContent.includes("
                           "'0.37 s -> 37 frames of 10 ms -> 18 encoder states of 20 ms')")
    assert page.locator("#out .check.bad").count() == 0 and "short.wav" in page.inner_text("#audio-note")
    page.click("#topics a[data-topic=tokens]")  # reads the transcript, not the recording: no error
    page.wait_for_function("document.querySelector('#out h2') && "
                           "document.querySelector('#out h2').textContent.startsWith('tokens')")
    assert page.inner_text("#error") == ""


def test_the_caption_page_captions_an_upload_and_draws_its_attention_on_the_patches(every_kind, page, tmp_path):
    from qkv.data.images import png_bytes

    url, runs = every_kind
    scene = runs["caption"].run.example_sources(1)[0]  # (3, 16, 16) in [-1, 1]
    upload = tmp_path / "scene.png"
    upload.write_bytes(png_bytes(scene))
    page.goto(f"{url}/runs/caption/caption")
    page.wait_for_selector("#image-source:not([hidden])")
    assert page.inner_text("h1") == "Caption an image" and page.locator("#text-source[hidden]").count() == 1
    page.fill("#beam", "2")
    page.set_input_files("#file", str(upload))
    page.wait_for_selector("#nbest li")
    page.wait_for_selector("#attention .words button")
    words = page.locator("#attention .words button")
    assert words.count() >= 1 and page.locator("#nbest li").count() >= 1
    assert "where “" in page.inner_text("#stats")
    drawn = page.evaluate("document.querySelector('#picture').width")
    assert drawn >= 16 * 8  # the 16-px scene drawn at least 8× with its 2 × 2 patches over it
    words.last.click()
    page.wait_for_function("document.querySelector('#attention .words button:last-child').classList.contains('pinned')")
    page.select_option("#head", "1")
    page.wait_for_function("document.querySelector('#stats').textContent.includes('head 1')")
