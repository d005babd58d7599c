"""A `Card` as one self-contained HTML page and as Markdown.

The HTML page needs nothing but itself: the CSS is inline, every picture and recording is a ``data:`` URL (a
recording plays in the browser's own ``<audio controls>``, only when the reader starts it), there is no script,
and its Content-Security-Policy (a ``<meta>`` tag) forbids every fetch and every script anyway, so a report opens
the same from disk, from an e-mail or from `qkv serve`, offline. Every string goes through `html.escape`: text a
model wrote (``<img src=x onerror=alert(1)>``) shows as those characters and never becomes an element.

The Markdown twin holds the same sections for a terminal, a diff or a repository: tables as Markdown tables (cells
escaped: ``|``, ``<``, ``>``, ``&``, backslash-escaped emphasis), model text and preformatted blocks in fenced code
blocks whose fence is longer than any run of backticks inside, and pictures as links where the picture is a file
(loss.png), else a note that report.html shows it; a recording is a note of what and where it is.
"""

from __future__ import annotations

import html
import re

from qkv.report.card import Audio, Card, Examples, Pairs, Picture, Pre, Table, Text

# the page may load nothing (default-src 'none'), run nothing, and show only its own inline style, data: images and
# data: recordings
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; media-src data:; base-uri 'none'; "
       "form-action 'none'")

CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6677; --line: #d9dde5; --bg: #f6f7f9; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0 0 10px; color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 14px; margin-bottom: 8px; }
nav a, a { color: var(--accent); text-decoration: none; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 14px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
p { margin: 6px 0; }
p.note { color: var(--muted); font-size: 14px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; }
pre { margin: 6px 0; padding: 8px 10px; background: var(--bg); border-radius: 6px; overflow-x: auto;
      font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.text { white-space: pre-wrap; word-break: break-word; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
figure { margin: 10px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figure img.small { image-rendering: pixelated; }
figcaption { color: var(--muted); font-size: 13px; }
figure audio { display: block; width: 100%; max-width: 420px; }
div.examples { display: grid; gap: 10px; }
table.examples { width: 100%; }
div.text, td.text { white-space: pre-wrap; word-break: break-word; padding-right: 16px;
                   font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
section#config .wide { display: inline-block; vertical-align: top; margin-right: 28px; }
.example { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
.example div.text { margin: 0 0 6px; }
.example .label { color: var(--muted); font-size: 12.5px; text-transform: uppercase; letter-spacing: 0.03em; }
.example figure { margin: 4px 0; }
footer { color: var(--muted); font-size: 13px; margin-top: 18px; }
"""


# ------------------------------------------------------------------------------------------------ HTML
def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?|[-+]?inf|nan", text.strip()))


def _picture_html(p: Picture) -> str:
    width = (f' width="{p.width}"' if p.width else "") + (' class="small"' if p.pixelated else "")
    caption = f"<figcaption>{_e(p.caption)}</figcaption>" if p.caption else ""
    return f'<figure><img src="{p.data_url()}" alt="{_e(p.alt)}"{width}>{caption}</figure>'


def _audio_html(a: Audio) -> str:
    return (f'<figure><audio controls preload="metadata" src="{a.data_url()}" aria-label="{_e(a.label)}"></audio>'
            f"<figcaption>{_e(a.label)}</figcaption></figure>")


def _block_html(block) -> str:
    if isinstance(block, Text):
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, Pairs):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in block.rows)
        return f'<div class="wide"><table>{rows}</table></div>'
    if isinstance(block, Table):
        head = "".join(f"<th>{_e(c)}</th>" for c in block.columns)
        num = ' class="num"'
        body = "".join("<tr>" + "".join(f"<td{num if _is_number(v) else ''}>{_e(v)}</td>" for v in row) + "</tr>"
                       for row in block.rows)
        return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(block, Pre):
        pre = f"<pre>{_e(block.text)}</pre>"
        return f"<details><summary>{_e(block.summary)}</summary>{pre}</details>" if block.summary else pre
    if isinstance(block, Picture):
        return _picture_html(block)
    if isinstance(block, Audio):
        return _audio_html(block)
    if isinstance(block, Examples) and block.table:
        labels = list(dict.fromkeys(label for ex in block.items for label, _ in ex.fields))
        head = "".join(f"<th>{_e(c)}</th>" for c in labels)
        rows = "".join("<tr>" + "".join(f'<td class="text">{_e(dict(ex.fields).get(c, ""))}</td>' for c in labels)
                       + "</tr>" for ex in block.items)
        return f'<div class="wide"><table class="examples"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>' \
               "</table></div>"
    if isinstance(block, Examples):
        items = []
        for ex in block.items:
            parts = [_picture_html(ex.picture)] if ex.picture else []
            parts += [_audio_html(ex.audio)] if ex.audio else []
            parts += [f'<div class="label">{_e(label)}</div><div class="text">{_e(text)}</div>'
                      for label, text in ex.fields]
            items.append(f'<div class="example">{"".join(parts)}</div>')
        style = f' style="grid-template-columns: repeat({block.columns}, minmax(0, 1fr))"' if block.columns > 1 else ""
        return f'<div class="examples"{style}>{"".join(items)}</div>'
    raise TypeError(f"not a report block: {type(block).__name__}")


def to_html(card: Card) -> str:
    """The whole page: one string, no external reference of any kind."""
    nav = "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in card.sections)
    sections = "".join(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>{"".join(map(_block_html, s.blocks))}'
                       "</section>" for s in card.sections)
    footer = f"<footer>{_e(card.footer)}</footer>" if card.footer else ""
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(card.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<header><h1>{_e(card.title)}</h1><p>{_e(card.summary)}</p><nav>{nav}</nav></header>\n"
            f"{sections}\n{footer}\n</main>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------ Markdown
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # special anywhere in a line
# special at the start of a line: a heading or list marker (followed by a space), a rule or setext underline
_MD_LEADING = re.compile(r"^([#+-])(?=\s|$)|^(\d+)([.)])(?=\s|$)|^([-=])(?=[-=\s]*$)")


def md_text(text: str) -> str:
    """Plain text as Markdown that renders as the same characters: entities for &, <, > (no raw HTML), a
    backslash before Markdown's punctuation, line breaks as spaces."""
    text = " ".join(str(text).split())
    text = _MD_SPECIAL.sub(r"\\\1", text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return _MD_LEADING.sub(lambda m: f"{m[2]}\\{m[3]}" if m[2] else f"\\{m[1] or m[4]}", text)


def fenced(text: str, lang: str = "") -> str:
    """`text` in a fenced code block whose fence is longer than any run of backticks in it (so the text cannot
    close the block early)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_text(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_text(v) or " " for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_picture(p: Picture) -> str:
    caption = f" — {md_text(p.caption)}" if p.caption else ""
    if p.link:
        return f"![{md_text(p.alt)}]({p.link.replace(' ', '%20').replace(')', '%29')}){caption}"
    return f"*(picture in report.html: {md_text(p.alt)})*{caption}"


def _md_audio(a: Audio) -> str:
    return f"*(recording in report.html: {md_text(a.label)}" + (f"; {md_text(a.where)}" if a.where else "") + ")*"


def _block_md(block) -> str:
    if isinstance(block, Text):
        return md_text(block.text)
    if isinstance(block, Pairs):
        return _md_table(["", ""], [[k, v] for k, v in block.rows])
    if isinstance(block, Table):
        return _md_table(block.columns, block.rows)
    if isinstance(block, Pre):
        return (f"{md_text(block.summary)}:\n\n" if block.summary else "") + fenced(block.text)
    if isinstance(block, Picture):
        return _md_picture(block)
    if isinstance(block, Audio):
        return _md_audio(block)
    if isinstance(block, Examples):
        out = []
        for k, ex in enumerate(block.items, 1):
            parts = [f"**{k}.**" + (f" {_md_picture(ex.picture)}" if ex.picture else "")
                     + (f" {_md_audio(ex.audio)}" if ex.audio else "")]
            parts += [f"{md_text(label)}:\n\n{fenced(text)}" for label, text in ex.fields]
            out.append("\n\n".join(parts))
        return "\n\n".join(out)
    raise TypeError(f"not a report block: {type(block).__name__}")


def to_markdown(card: Card) -> str:
    parts = [f"# {md_text(card.title)}", md_text(card.summary)]
    for s in card.sections:
        parts.append(f"## {md_text(s.title)}")
        parts += [_block_md(b) for b in s.blocks]
    if card.footer:
        parts.append(f"*{md_text(card.footer)}*")
    return "\n\n".join(parts) + "\n"
