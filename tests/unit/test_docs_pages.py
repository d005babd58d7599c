"""The front door stays a front door: README.md is short and names every package, no page shows one machine's
paths, and the docs site builds with --strict and loads nothing from the internet when a page is viewed."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import qkv
from helpers import REPO

README_MAX_LINES = 250
# absolute home or work folders of one machine (`~/.cache/qkv/data`, `$QKV_DATA_DIR` and relative paths are fine);
# the lookbehind keeps URLs (`https://host/work/...`) and relative paths (`runs/tmp/`) out
MACHINE_PATH = re.compile(r"(?<![\w./~$-])/(?:work|home|root|Users|tmp)/")


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_no_page_shows_a_machine_path():
    hits = []
    for page in doc_pages():
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{page.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not hits, ("absolute paths of one machine (write $QKV_DATA_DIR, ~/.cache/qkv/data or a relative "
                      "run directory instead):\n" + "\n".join(hits))


@pytest.mark.parametrize("line, machine", [
    ("ok  sha256  /work/shared/data/tinyshakespeare/input.txt", True),
    ("python bench/generate.py --trained /tmp/r2", True),
    ("cd /home/ana/qkv && make test", True),
    ("see /Users/bo/runs", True),
    ("cached in ~/.cache/qkv/data/alignments/2450c2", False),
    ("$QKV_DATA_DIR/tinyshakespeare/input.txt", False),
    ("QKV_DATA_DIR=../shared/data python bench/mrt.py runs/m30k-base", False),
    ("http://127.0.0.1:8000/runs/shakespeare/generate", False),
])
def test_the_machine_path_pattern(line, machine):
    assert bool(MACHINE_PATH.search(line)) == machine


def test_the_readme_is_short_and_its_layout_names_every_package():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    layout = readme[readme.index("## Layout"):]
    src = Path(qkv.__file__).parent
    packages = sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file())
    modules = ["runs.py", "config.py", "errors.py"]
    missing = [p for p in packages if f"`{p}/`" not in layout] + [m for m in modules if f"`{m}`" not in layout]
    assert not missing, f"README's Layout section does not name: {', '.join(missing)}"


class _Assets(HTMLParser):
    """What a browser fetches when it shows the page: scripts, stylesheets and icons, images, frames."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "video", "audio") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") != "canonical":
            self.urls.append(attrs["href"])


def test_the_site_builds_strict_and_loads_nothing_from_the_internet(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-3000:]}"
    external = []
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        external += [f"{page.relative_to(site)}: {url}" for url in parser.urls if re.match(r"(https?:)?//", url)]
    for sheet in site.rglob("*.css"):
        external += [f"{sheet.relative_to(site)}: {url}"
                     for url in re.findall(r"(?:url\(|@import\s+)[\"']?((?:https?:)?//[^\"')\s]+)", sheet.read_text())]
    assert not external, "the site loads from the internet:\n" + "\n".join(external)
    shutil.rmtree(site)
