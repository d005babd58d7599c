"""Human evaluation in a real browser: a rater finishes a session with the keyboard alone (error spans, both
sliders, the preference, submit), comes back to a saved session, and the admin page's numbers change; an
audio-to-text item's recording loads in the page's <audio> player under the server's policy, and is scored."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from helpers import toy_campaign
from qkv.humaneval.store import Store
from qkv.server import ServeConfig, create_app
from serve_fixtures import LiveServer

pytestmark = pytest.mark.slow
ADMIN = "a" * 32


@pytest.fixture
def served(tmp_path):
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        camp = toy_campaign(store, "demo", n_items=4, raters=1)
    with LiveServer(create_app({}, ServeConfig(db=db, admin_token=ADMIN))) as url:
        yield url, db, camp["raters"][0]["token"]


def rate_current_item_with_the_keyboard(page, k: int) -> None:
    page.wait_for_selector(".cand .word")
    page.locator(".cand").first.locator(".word").first.focus()
    page.keyboard.press("Space")  # mark the first word of A: minor
    page.keyboard.press("Space")  # ... major
    for i, cand in enumerate(page.locator(".cand").all()):
        for j, slider in enumerate(cand.locator("input[type=range]").all()):
            slider.focus()
            page.keyboard.press("End" if i == 0 else "Home")  # A: 100, B: 0
            for _ in range(k + j):
                page.keyboard.press("ArrowLeft" if i == 0 else "ArrowRight")
    page.locator("body").focus()
    page.keyboard.press("a")  # A is better
    page.keyboard.press("Control+Enter")


def test_a_keyboard_rating_session_changes_the_report(served, page):
    url, db, token = served
    page.goto(f"{url}/admin#token={ADMIN}")
    page.wait_for_selector("table.grid[data-criterion=accuracy]")
    assert "judged 0 of" in page.inner_text("#summary")
    raw_before = page.inner_text("table[data-criterion=accuracy] tr[data-system=a] td.raw")
    assert raw_before == "n/a"

    rater = page.context.new_page()
    rater.goto(f"{url}/rate/{token}")
    rater.wait_for_selector("#progress:has-text('item 1 of')")
    total = int(rater.inner_text("#progress").split(" of ")[1].split(" ")[0])
    assert rater.locator("#submit").is_disabled()  # nothing is submitted before both sliders of both are set
    rate_current_item_with_the_keyboard(rater, 0)
    rater.wait_for_selector("#progress:has-text('1 rated')")
    rater.reload()  # the session is saved: back at the next item
    rater.wait_for_selector("#progress:has-text('item 2 of')")
    for k in range(1, total):
        rate_current_item_with_the_keyboard(rater, k)
        if k < total - 1:
            rater.wait_for_selector(f"#progress:has-text('{k + 1} rated')")
    rater.wait_for_selector("#done:not(.hidden)")
    assert f"{total} of {total} rated" in rater.inner_text("#progress")

    with Store(db) as store:
        rows = store.judged_candidates("demo")
    assert len({r["judgement_id"] for r in rows}) == total
    first = [r for r in rows if r["task_position"] == 0]
    spans = [s for r in first for s in r["spans"]]
    assert len(spans) == 1 and spans[0]["severity"] == "major" and spans[0]["start"] == 0

    page.click("#refresh")
    page.wait_for_function("!document.querySelector('#summary').textContent.includes('judged 0 of')")
    assert f"judged {total} of {total}" in page.inner_text("#summary")
    # the page shows the store's numbers: slots are shuffled per task, so each system got ~100 (as A) on some
    # items and ~0 (as B) on others; the mean over its real items is what the page must show
    with Store(db) as store:
        rows = [r for r in store.judged_candidates("demo") if not r["control"]]
    for system in ("a", "b"):
        scores = [r["accuracy"] for r in rows if r["system"] == system]
        shown = page.inner_text(f"table[data-criterion=accuracy] tr[data-system={system}] td.raw")
        assert shown == f"{sum(scores) / len(scores):.1f}"
    prefs = page.inner_text("#preferences")
    assert f"(of {len(rows) // 2})" in prefs and "tie 0" in prefs  # every real task got A or B, never a tie
    page.wait_for_function("document.querySelector('#plot').naturalWidth > 0")


# ------------------------------------------------------------------------------------------------ audio-to-text
def wav_data_url(seconds: float = 0.75, hz: float = 440.0) -> str:
    """A tone as a 16-bit mono WAV data URL at 16 kHz, what `qkv human-eval create` stores for a recording."""
    import io

    import numpy as np
    from scipy.io import wavfile

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    wavfile.write(buf, 16000, (0.2 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16))
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture
def served_audio(tmp_path):
    """An audio-to-text campaign of two systems over three recordings (tones: no run needed), served."""
    from qkv.humaneval.campaign import plan_campaign

    db = tmp_path / "he.db"
    items = [(i, wav_data_url(0.5 + 0.25 * i, 220.0 * (i + 1)), word) for i, word in enumerate(["zero", "one", "two"])]
    outputs = [["zero", "one", "two"], ["sero", "won", "too"]]
    with Store(db, create=True) as store:
        store.add_campaign(plan_campaign("digits", "audio-to-text", {"source": "tones"},
                                         [("attn", "/runs/attn"), ("ctc", "/runs/ctc")], items, outputs, 1, 0))
        token = store.campaign("digits")["raters"][0]["token"]
    with LiveServer(create_app({}, ServeConfig(db=db, admin_token=ADMIN))) as url:
        yield url, db, token


def test_an_audio_item_plays_in_the_rater_page_under_its_policy_and_is_scored(served_audio, browser):
    """The recording is an <audio controls> the rater starts (never autoplayed), and it loads as audio: its
    duration is the recording's. The server's Content-Security-Policy is enforced here (the shared `page` fixture
    bypasses it), so a policy that forbade data: media would leave the duration unknown and log an error."""
    url, db, token = served_audio
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    console, errors, failed = [], [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{url}/rate/{token}")
        page.wait_for_selector("#progress:has-text('item 1 of')")
        audio = page.locator("#source audio")
        assert audio.count() == 1
        assert audio.get_attribute("controls") is not None and audio.get_attribute("autoplay") is None
        assert audio.get_attribute("src").startswith("data:audio/wav;base64,")
        assert page.inner_text("#source-label") == "Recording" and page.text_content("#i-read") == "Listen to"
        assert audio.evaluate("a => a.canPlayType('audio/wav')") != ""
        deadline = time.monotonic() + 15
        while (duration := audio.evaluate("a => a.duration")) != duration or not duration:  # NaN until loaded
            assert time.monotonic() < deadline, f"the recording never loaded: {[m[:160] for m in console]}"
            time.sleep(0.05)
        assert audio.evaluate("a => a.error") is None and audio.evaluate("a => a.paused")  # the rater starts it
        with Store(db) as store:
            first = store.task(store.rater(token).id, 0)
        samples = (len(base64.b64decode(first["source"].split(",", 1)[1])) - 44) // 2  # 16-bit PCM after the header
        assert duration == pytest.approx(samples / 16000, abs=0.01)
        assert [h.inner_text() for h in page.locator(".cand h2").all()] == ["Transcript A", "Transcript B"]
        rate_current_item_with_the_keyboard(page, 0)  # error spans, both sliders, the preference, Ctrl+Enter
        page.wait_for_selector("#progress:has-text('1 rated')")
        assert page.locator("#source audio").count() == 1  # the next recording replaced the first
        assert not errors and not failed, (errors, failed)  # (the browser's own favicon.ico request is no response)
        assert not [m for m in console if "Content Security Policy" in m or "Refused" in m], console
    finally:
        page.screenshot(path=str(Path(db).parent / "audio.png"), full_page=True)
        context.close()
    with Store(db) as store:
        rows = store.judged_candidates("digits")
    assert len(rows) == 2 and {r["task_position"] for r in rows} == {0}
    best = max(rows, key=lambda r: r["accuracy"])  # slot A got 100 and the preference, B 0
    assert sorted(r["accuracy"] for r in rows) == [0, 100] and {r["preference"] for r in rows} == {best["system"]}
