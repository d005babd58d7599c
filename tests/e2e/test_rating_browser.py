"""Human evaluation in a real browser: a rater finishes a session with the keyboard alone (error spans, both
sliders, the preference, submit), comes back to a saved session, and the admin page's numbers change."""

from __future__ import annotations

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
