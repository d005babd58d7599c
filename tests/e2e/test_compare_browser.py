"""The chat page's compare mode in a real browser (headless Chromium through Playwright): `qkv serve` on a chat
pipeline's folder (a tiny LM as its base stage, the tiny chat run as its sft stage, the rl stage still training)
opens the pipeline's chat run, and one message goes to both stages side by side: the chat run answers it with
its chat template, the base LM continues it as plain text; each column fills, under the run's name."""

from __future__ import annotations

import pytest

from qkv.server import ServeConfig, create_app, load_runs
from serve_fixtures import LiveServer, make_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_runs, tmp_path_factory):
    out = make_pipeline(tmp_path_factory.mktemp("pipeline") / "chat-pipeline",
                        {"base": tiny_runs["lm"], "sft": tiny_runs["chat"], "rl": None})
    runs = load_runs([out])
    with LiveServer(create_app(runs, ServeConfig())) as url:
        yield url, runs


def test_compare_mode_shows_each_stage_in_its_own_column(server, page, tmp_path):
    url, runs = server
    assert list(runs) == ["base", "sft"]  # stage order; the tokenizer folder and the unfinished rl stage left out
    page.goto(f"{url}/chat")  # the pipeline's chat page: its final stage (rl) is not trained yet, so sft's
    page.wait_for_selector("header nav a.here >> text=chat")
    assert page.url == f"{url}/runs/sft/chat"
    page.click("#mode-compare")
    page.wait_for_selector("#compare-runs input[value=sft]")
    boxes = page.locator("#compare-runs input[type=checkbox]")
    assert [boxes.nth(i).get_attribute("value") for i in range(boxes.count())] == ["base", "sft"]
    assert all(boxes.nth(i).is_checked() for i in range(boxes.count()))  # the pipeline's runs, by default
    assert page.url.endswith("#compare") and page.locator("#chat").is_hidden()
    page.fill("#temperature", "0")
    page.fill("#max_new_tokens", "20")
    page.fill("#message", "<")  # a character both tokenizers know (the base LM's own prompt; the chat run answers it)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#columns .column.done').length === 2")
    columns = page.locator("#columns .column")
    assert [columns.nth(i).get_attribute("data-run") for i in range(2)] == ["base", "sft"]
    base, sft = columns.nth(0), columns.nth(1)
    assert base.locator("h2").inner_text().startswith("base")
    assert "continues the text: no chat template" in base.locator("h2").inner_text()
    assert sft.locator("h2").inner_text().startswith("sft") and "chat reply" in sft.locator("h2").inner_text()
    for col in (base, sft):
        assert col.locator(".error").inner_text() == ""
        assert col.locator(".reply").inner_text().strip() != ""
        assert "ended:" in col.locator(".stats").inner_text()
    assert base.locator(".prompt").inner_text() == "<"  # the base LM's column shows what it continued
    assert page.locator("#columns img").count() == 0 and not page.dialogs  # its markup stays text
    assert page.inner_text("#compare-prompt") == "you: <"
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    # back to chatting with one run: the conversation view, as before
    page.click("#mode-chat")
    assert page.locator("#compare").is_hidden() and page.locator("#single.hidden").count() == 0
    assert not page.url.endswith("#compare")


def test_the_index_links_the_pipeline_chat_and_compare(server, page):
    url, _ = server
    page.goto(f"{url}/")
    page.wait_for_selector(".card.pipeline")
    card = page.locator(".card.pipeline")
    assert "base → sft" in card.inner_text()
    assert card.locator("a").nth(1).get_attribute("href") == "/runs/sft/chat#compare"
    card.locator("a").nth(1).click()
    page.wait_for_selector("#compare-runs input[value=base]")
    assert page.locator("#compare").is_visible()
