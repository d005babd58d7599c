"""The docs' pictures of `qkv serve`, and its small human-evaluation campaign, rated through the page.

    python scripts/playground_tour.py --translate runs/multi30k --short runs/multi30k-short \\
        --lm runs/shakespeare --chat runs/chat --images runs/shapes --out docs/images [--n 100 --raters 3]

1. `qkv human-eval create` a campaign comparing the translation run with a shorter run of the same preset
   (Multi30k test_2016_flickr, `--n` items, `--raters` raters) in a fresh store.
2. Serve every run and the store (uvicorn in this process, loopback), and drive headless Chromium (Playwright,
   Debian's `chromium`) through each page, saving a screenshot of each into `--out`.
3. Rate the whole campaign through the rater page, every rater, every item — with **scripted scores, not human
   judgement**: a rule computed from the reference, which the page never shows (below), plus a per-rater
   offset and noise. The scripted rater marks error spans, moves both sliders, picks a preference and submits,
   as a person would with the mouse.
4. Print `qkv human-eval report` and save its plot and the admin page.

The scripted rule, per candidate (words lower-cased, punctuation stripped, compared as multisets):
  accuracy = 100 · recall of the reference's words;  fluency = 100 · precision − 15 · repeated adjacent words;
  then + the rater's offset (0, −6, +6, ...) + N(0, 6²) noise (seeded), clipped to [0, 100] and rounded.
  Words not in the reference are marked as error spans: minor, or major when the precision is under 0.5.
  Preference: the candidate whose accuracy + fluency is higher by more than 4, else a tie.
Because the rule reads the reference, the report's Kendall τ against chrF++/BLEU is high by construction; the
campaign shows the machinery (spans, sliders, controls, z-scores, tests, α, the report), not what people think.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ADMIN = "tour-admin-token-0123456789abcdef"


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def scripted(candidate: str, reference: str, offset: float, rng: random.Random) -> dict:
    c, r = Counter(words(candidate)), Counter(words(reference))
    common = sum((c & r).values())
    recall = common / max(1, sum(r.values()))
    precision = common / max(1, sum(c.values()))
    toks = words(candidate)
    repeats = sum(a == b for a, b in zip(toks, toks[1:], strict=False))

    def clip(x):
        return int(round(min(100.0, max(0.0, x + offset + rng.gauss(0, 6)))))

    severity = "major" if precision < 0.5 else "minor"
    marked = [w for w in toks if w not in r]
    return {"accuracy": clip(100 * recall), "fluency": clip(100 * precision - 15 * repeats),
            "marked": set(marked), "severity": severity}


class Server:
    def __init__(self, runs: list[str], db: Path):
        import uvicorn

        from qkv.server import ServeConfig, create_app, load_runs

        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        app = create_app(load_runs(runs), ServeConfig(db=db, admin_token=ADMIN))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def shoot(page, path: Path, full: bool = False) -> None:
    page.screenshot(path=str(path), full_page=full)
    print(f"wrote {path}")


def tour(page, url: str, names: dict, out: Path, prompt: str) -> None:
    if names.get("lm"):
        page.goto(f"{url}/runs/{names['lm']}/generate")
        page.fill("#prompt", prompt)
        page.fill("#temperature", "0.8")
        page.fill("#seed", "1")
        page.fill("#max_new_tokens", "160")
        page.click("#go")
        page.wait_for_function("document.querySelector('#stats').textContent.includes('tokens in')")
        page.locator("#output .tok[data-id]").nth(24).hover()
        page.wait_for_selector("#tip:not(.hidden)")
        shoot(page, out / "serve-generate.png")
        page.goto(f"{url}/runs/{names['lm']}/attention")
        page.fill("#text", prompt + ("But soft, what light" if prompt.startswith("ROMEO") else ""))
        page.click("#go")
        page.wait_for_selector("#heatmap table.heat")
        page.select_option("#head", "1")
        page.wait_for_function("document.querySelector('#heatmap').textContent.includes('head 1')")
        shoot(page, out / "serve-attention.png", full=True)
        page.goto(f"{url}/runs/{names['lm']}/params")
        page.wait_for_selector("#table table")
        shoot(page, out / "serve-params.png", full=True)
        page.goto(f"{url}/runs/{names['lm']}/explain#topic=qkv")
        page.fill("#input", "ROMEO: But soft")
        page.click("#go")
        page.wait_for_selector("#out figure img")
        shoot(page, out / "serve-explain.png")
    if names.get("chat"):
        page.goto(f"{url}/runs/{names['chat']}/chat")
        page.fill("#temperature", "0")
        for q in ("How many letters in zifqa?", "And doubled?", "How many g in 7 kg?"):
            page.fill("#message", q)
            page.keyboard.press("Enter")
            page.wait_for_selector(f".msg.assistant >> nth={page.locator('.msg.user').count() - 1}")
            page.wait_for_function("!document.querySelector('#send').disabled")
        shoot(page, out / "serve-chat.png", full=True)
    if names.get("translate"):
        page.goto(f"{url}/runs/{names['translate']}/translate")
        page.fill("#text", "Ein Junge mit Kopfhörern sitzt auf den Schultern einer Frau.")
        page.fill("#beam", "5")
        page.click("#go")
        page.wait_for_selector("#heatmap table.heat")
        shoot(page, out / "serve-translate.png", full=True)
    if names.get("images"):
        page.goto(f"{url}/runs/{names['images']}/images")
        page.wait_for_function("document.querySelectorAll('#strip img').length >= 8")
        page.wait_for_function("document.querySelectorAll('#forward img').length >= 8")
        shoot(page, out / "serve-images.png", full=True)


def rate_all(browser, url: str, links: list[str], refs: dict, out: Path, seed: int) -> int:
    n = 0
    for k, link in enumerate(links):
        page = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
        page.goto(link.replace("http://127.0.0.1:8000", url))
        offset = [0, -6, 6, -3, 3][k % 5]
        rng = random.Random(seed * 1000 + k)
        while True:
            page.wait_for_function("!document.querySelector('#done').classList.contains('hidden') || "
                                   "document.querySelectorAll('.cand').length > 0")
            if page.locator("#done:not(.hidden)").count():
                break
            source = page.inner_text("#source")
            reference = refs[source]
            totals = {}
            for cand in page.locator(".cand").all():
                text = " ".join(cand.locator(".word").all_inner_texts())
                s = scripted(text, reference, offset, rng)
                for word in cand.locator(".word").all():
                    if words(word.inner_text()) and set(words(word.inner_text())) <= s["marked"]:
                        word.click()
                        if s["severity"] == "major":
                            word.click()
                cand.locator("input[type=range]").nth(0).fill(str(s["accuracy"]))
                cand.locator("input[type=range]").nth(1).fill(str(s["fluency"]))
                slot = cand.locator("h2").inner_text().split()[-1]
                totals[slot] = s["accuracy"] + s["fluency"]
            if page.locator("#pref:not(.hidden)").count():
                a, b = totals.get("A", 0), totals.get("B", 0)
                page.check(f"input[name=pref][value={'A' if a > b + 4 else 'B' if b > a + 4 else 'tie'}]")
            if k == 0 and n == 0:
                shoot(page, out / "serve-rate.png", full=True)
            before = page.inner_text("#progress")
            page.click("#submit")
            try:
                page.wait_for_function(f"document.querySelector('#progress').textContent !== {before!r}")
            except Exception:
                shoot(page, Path(tempfile.gettempdir()) / "tour-failed.png", full=True)
                raise SystemExit(f"the rater page did not take the judgement: {page.inner_text('#error')!r}") from None
            n += 1
        page.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("translate", "short", "lm", "chat", "images"):
        ap.add_argument(f"--{name}", help=f"the {name} run directory")
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--prompt", default="ROMEO:\n", help="what the generate page continues")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--raters", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from qkv.humaneval.store import Store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="qkv-tour-"))
    db = tmp / "human-eval.db"
    name = "multi30k-vs-short"
    cmd = [sys.executable, "-m", "qkv", "human-eval", "create", name, "--runs", args.translate, args.short,
           "--data", "multi30k", "--n", str(args.n), "--raters", str(args.raters), "--seed", str(args.seed),
           "--db", str(db), "--no-progress"]
    print("$ qkv human-eval create " + " ".join(cmd[5:]))
    made = subprocess.run(cmd, capture_output=True, text=True, check=True)
    print(made.stdout)
    links = [line.split(": ", 1)[1].strip() for line in made.stdout.splitlines() if "/rate/" in line]
    with Store(db) as store:
        refs = {it["source"]: it["reference"] for it in store.items(name)}
    runs = [r for r in (args.lm, args.chat, args.translate, args.short, args.images) if r]
    names = {k: Path(getattr(args, k)).name for k in ("lm", "chat", "translate", "images")
             if getattr(args, k)}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with Server(runs, db) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        # bypass_csp: Playwright's waits evaluate strings, which the server's CSP (no eval) refuses
        page = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True).new_page()
        tour(page, url, names, out, args.prompt)
        t0 = time.time()
        n = rate_all(browser, url, links, refs, out, args.seed)
        print(f"rated {n} tasks through the rater page in {time.time() - t0:.0f} s (scripted scores)")
        page = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
        page.goto(f"{url}/admin#token={ADMIN}")
        page.wait_for_function("document.querySelector('#plot').naturalWidth > 0")
        shoot(page, out / "serve-admin.png", full=True)
        browser.close()
    report = subprocess.run([sys.executable, "-m", "qkv", "human-eval", "report", name, "--db", str(db),
                             "--plot", str(out / "human-eval-report.png")], capture_output=True, text=True, check=True)
    print(f"$ qkv human-eval report {name}")
    print(report.stdout)
    print(f"(store kept at {db})")


if __name__ == "__main__":
    main()
