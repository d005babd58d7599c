"""MkDocs hooks (mkdocs.yml `hooks:`): the site's home page is the repository's README.md.

docs/index.md is a placeholder; at build time its Markdown is replaced by README.md's, with the README's links
into the docs folder (`docs/guides/gpt.md`, `docs/images/x.png`) rewritten relative to the site's root. The
site build then checks the README's links and anchors like every other page's (`mkdocs build --strict`).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_for_site(text: str) -> str:
    """README.md as the site's index.md: `docs/...` link and image targets lose their `docs/` prefix."""
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r'(src|href)="docs/', r'\1="', text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "index.md":
        return readme_for_site(README.read_text(encoding="utf-8"))
    return markdown
