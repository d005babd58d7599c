"""Reference word alignments: what a word is, eflomal run on parallel text, the links cached by a sha256.

**A word** (`word_spans`, `split_words`) is a run of letters, a run of digits, a run of other non-space
characters, or an English clitic (``'s 't 're 've 'm 'll 'd``): GPT-2's pre-tokenizer pattern without its
optional leading space, which the byte-level BPE of qkv's translation runs splits text with before merging.
So a BPE token never straddles two words, and `words_of_pieces` groups a sentence's tokens back into exactly
the words `split_words` gives the aligner: one definition on both sides, so word indices agree.
Example: ``split_words("Ein Mann's T-Shirt.") == ["Ein", "Mann", "'s", "T", "-", "Shirt", "."]``.

**The aligner** is eflomal (Östling & Tiedemann 2017, PyPI ``eflomal``, the optional extra ``qkv[align]``):
a Bayesian IBM1 + HMM + fertility model fitted by Gibbs sampling, run in both directions (source→target
and target→source). eflomal ships no symmetrisation; the two directions are joined here with
grow-diag-final-and (Koehn et al. 2003, as fast_align's ``atools -c grow-diag-final-and``): start from
their intersection, grow into neighbouring (also diagonal) links of the union that cover an unaligned word,
then add union links whose source and target words are both still unaligned. eflomal seeds its sampler
from /dev/urandom and takes no seed, so two runs differ slightly; the cache keeps the first.

**What is aligned**: the training pairs of a translation run plus the sentences to evaluate (more text
gives the unsupervised aligner better statistics), as named *parts* of one corpus (`align_parts`). The
result is cached under ``$QKV_CACHE_DIR/alignments/<sha256>/`` (default ``~/.cache/qkv/data/...``), the
hash taken over the texts of every part, the part names, the eflomal settings, the symmetrisation and the
word definition's version: change any input and a new alignment is computed; ask again and it is read back.
The folder holds ``src.txt``/``tgt.txt`` (the raw lines), ``fwd.txt``/``rev.txt`` (eflomal's two
directions), ``links.txt`` (symmetrised) and ``alignment.json`` (parts, settings, seconds taken).

**Link files** are Pharaoh format, one line per sentence pair: ``i-j`` links source word i to target word
j (0-based). A gold standard may also mark possible links, ``i?j`` or ``ipj``; eflomal's links are all sure
(then S = P in the alignment error rate). A file whose line count differs from the data's, or a link past
the end of its sentence, is a one-line `QKVError`.

**For training** (guided alignment, Garg et al. 2019): ``reference_alignments(cfg.data)`` aligns the
run's training pairs alone; ``reference_alignments(cfg.data, "test_2016_flickr", srcs, refs, desc)``
(what ``qkv eval --alignment`` caches) aligns them with the test split, and ``align_parts(...).part("train")``
of the same parts reads the training links back from that cache. ``Alignments.sure[k]`` are the word links of
line k of the training files; `load_split` keeps a prefix of those lines (``max_train_pairs``, or the part
before a held-out validation tail), so index k is the same, but `make_examples` drops pairs with an empty
side: drop the same k. Per pair, group the (truncated) token ids into words with ``words_of_pieces(
[tok.token_bytes(i) for i in ids])`` (no specials), then `token_links` gives (target position t, source
position s) pairs: row t of the decoder's cross-attention (the query that produces ``tgt_out[t]``) and
column s of ``src`` — the rows and columns `qkv.evaluation.alignment` reads, so a guided head is scored
exactly where it is trained. A batch can carry them as a (B, T, S) 0/1 tensor beside ``collate``'s keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qkv.errors import QKVError

# GPT-2's pre-tokenizer pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+) in Python's
# `re`, without the leading space: letters are [^\W\d_], digits \d, anything else that is not a space is "other"
WORD = re.compile(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d+|(?:[^\s\w]|_)+")
_LINK = re.compile(r"(\d+)([-?p])(\d+)")  # one Pharaoh link: i-j sure, i?j or ipj possible
WORDS_VERSION = 1  # bump when WORD changes: it is part of the cache key
SYMMETRIZATION = "grow-diag-final-and"
FORMAT_VERSION = 2  # the cache folder's layout (2: its record is alignment.json)
META_FILE = "alignment.json"  # what a cached folder was made from; a folder without it is not a cache entry


# ------------------------------------------------------------------------------------------------ words
def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words of `text`. Example: ``"a  b."`` -> ``[(0, 1), (3, 4), (4, 5)]``."""
    return [m.span() for m in WORD.finditer(text)]


def split_words(text: str) -> list[str]:
    """The words of `text` (module docstring). Example: ``"Zwei Hunde, 3 Bälle."`` ->
    ``["Zwei", "Hunde", ",", "3", "Bälle", "."]``."""
    return WORD.findall(text)


def words_of_pieces(pieces: Sequence[bytes], special: Sequence[bool] | None = None) -> list[tuple[str, list[int]]]:
    """Group consecutive token pieces into words: [(the word, the positions of its pieces)], in order.

    `pieces` are the tokens' UTF-8 bytes (``tok.token_bytes(i)``; a byte-level token may hold part of a
    character). A special token (``special[k]`` True) is a word of its own, named by its bytes. Between
    specials the pieces are joined and split by `word_spans`; a piece belongs to the first word it overlaps, a
    piece of spaces only to the next word (the previous one at the end; a word "▁" if there is no word at all).
    Example: pieces ``b"die", b" ", b"dr", b"ei", b" eins", b" .", b"<eos>"`` (the last special) ->
    ``[("die", [0]), ("drei", [1, 2, 3]), ("eins", [4]), (".", [5]), ("<eos>", [6])]``.
    """
    special = list(special) if special is not None else [False] * len(pieces)
    words: list[tuple[str, list[int]]] = []
    k = 0
    while k < len(pieces):
        if special[k]:
            words.append((pieces[k].decode("utf-8", errors="replace"), [k]))
            k += 1
            continue
        end = k
        while end < len(pieces) and not special[end]:
            end += 1
        words.extend(_group_run(pieces[k:end], k))
        k = end
    return words


def _group_run(pieces: Sequence[bytes], offset: int) -> list[tuple[str, list[int]]]:
    """`words_of_pieces` for a run of ordinary pieces starting at position `offset`."""
    buf = b"".join(pieces)
    text = buf.decode("utf-8", errors="surrogateescape")  # every byte stays one char or part of one
    byte_at = [0]  # byte offset of every character boundary
    for c in text:
        byte_at.append(byte_at[-1] + len(c.encode("utf-8", errors="surrogateescape")))
    spans = [(byte_at[s], byte_at[e]) for s, e in word_spans(text)]
    if not spans:
        return [("▁", [offset + i for i in range(len(pieces))])] if pieces else []
    members: list[list[int]] = [[] for _ in spans]
    start, w = 0, 0
    for i, piece in enumerate(pieces):
        end = start + len(piece)
        while w < len(spans) - 1 and spans[w][1] <= start:  # skip the words that end before this piece
            w += 1
        if spans[w][0] < end and spans[w][1] > start:  # overlaps word w
            members[w].append(offset + i)
        else:  # spaces only: the next word, or the last one
            nxt = next((v for v in range(w, len(spans)) if spans[v][0] >= end), len(spans) - 1)
            members[nxt].append(offset + i)
        start = end
    out = []
    for (s, e), m in zip(spans, members, strict=True):
        out.append((buf[s:e].decode("utf-8", errors="replace"), sorted(m)))
    return out


def token_links(src_words: list[list[int]], tgt_words: list[list[int]],
                links: set[tuple[int, int]] | frozenset[tuple[int, int]]) -> list[tuple[int, int]]:
    """Word links -> token links: (target token position, source token position) for every piece of a linked
    target word and every piece of the source word it links to. `src_words` / `tgt_words` are the piece
    positions of each *ordinary* word, in order (specials left out), e.g. from `words_of_pieces`.

    Example: source pieces [[0], [1, 2]] (two words), target pieces [[0, 1], [2]], links {(1, 0)} ->
    [(0, 1), (0, 2), (1, 1), (1, 2)]. Links to words with no pieces (cut by the context) are dropped.
    """
    out = []
    for i, j in sorted(links, key=lambda ij: (ij[1], ij[0])):
        if i < len(src_words) and j < len(tgt_words):
            out.extend((t, s) for t in tgt_words[j] for s in src_words[i])
    return out


# ------------------------------------------------------------------------------------------------ links
def parse_links(line: str, where: str = "") -> tuple[frozenset, frozenset]:
    """One Pharaoh line -> (sure links, possible links ⊇ sure), each a set of (source word, target word).
    Example: ``"0-0 1?2 2p1"`` -> ({(0, 0)}, {(0, 0), (1, 2), (2, 1)})."""
    sure, possible = set(), set()
    for item in line.split():
        m = _LINK.fullmatch(item)
        if m is None:
            raise QKVError(f"{where}: {item!r} is not a link (i-j sure, i?j or ipj possible; 0-based)")
        link = (int(m.group(1)), int(m.group(3)))
        possible.add(link)
        if m.group(2) == "-":
            sure.add(link)
    return frozenset(sure), frozenset(possible)


def format_links(links) -> str:
    """Links -> one Pharaoh line, sorted by source then target: {(1, 0), (0, 0)} -> ``"0-0 1-0"``."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def grow_diag_final_and(fwd, rev, n_src: int, n_tgt: int) -> set[tuple[int, int]]:
    """Symmetrise two directional alignments of one sentence pair (Koehn et al. 2003; Moses/atools).

    `fwd`, `rev`: sets of (source word, target word). Start from fwd ∩ rev; grow: repeatedly add a link of
    fwd ∪ rev that neighbours (8 directions) a current link and covers a word not yet aligned on its side;
    final-and: add the links of fwd, then of rev, whose source and target words are both unaligned.
    """
    fwd, rev = set(fwd), set(rev)
    union = fwd | rev
    links = fwd & rev
    src_done = {i for i, _ in links}
    tgt_done = {j for _, j in links}
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    added = True
    while added:
        added = False
        for i in range(n_src):
            for j in range(n_tgt):
                if (i, j) not in links:
                    continue
                for di, dj in neighbours:
                    p = (i + di, j + dj)
                    if p in union and p not in links and (p[0] not in src_done or p[1] not in tgt_done):
                        links.add(p)
                        src_done.add(p[0])
                        tgt_done.add(p[1])
                        added = True
    for direction in (fwd, rev):
        for i, j in sorted(direction):
            if i not in src_done and j not in tgt_done:
                links.add((i, j))
                src_done.add(i)
                tgt_done.add(j)
    return links


# ------------------------------------------------------------------------------------------------ alignments
@dataclass(frozen=True)
class AlignerSettings:
    """eflomal's settings (its defaults); all of them are part of the cache key."""

    model: int = 3  # 1 = IBM1, 2 = IBM1 + HMM, 3 = IBM1 + HMM + fertility
    n_samplers: int = 3  # independent Gibbs samplers whose link marginals are combined
    null_prior: float = 0.2  # prior probability of a NULL link (a target word left unaligned)
    rel_iterations: float = 1.0  # sampling iterations relative to eflomal's default (5000 / sqrt(sentences))

    def __post_init__(self):
        if self.model not in (1, 2, 3):
            raise QKVError(f"eflomal model must be 1, 2 or 3, got {self.model}")
        if self.n_samplers < 1 or self.rel_iterations <= 0 or not 0.0 <= self.null_prior < 1.0:
            raise QKVError("eflomal needs n_samplers >= 1, rel_iterations > 0 and null_prior in [0, 1)")


@dataclass
class Alignments:
    """Word alignments of a corpus of sentence pairs: per pair, the words and the links between them."""

    src: list[str]  # raw source lines
    tgt: list[str]  # raw target lines
    sure: list[frozenset]  # per pair: sure links (source word, target word), 0-based indices of split_words
    possible: list[frozenset]  # per pair: possible links ⊇ sure (= sure for eflomal's)
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # part name -> [start, end) lines
    path: Path | None = None  # the cache folder (or the link file read)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)

    def part(self, name: str) -> Alignments:
        """The pairs of one part (e.g. "train", "test_2016_flickr")."""
        if name not in self.parts:
            raise QKVError(f"no part {name!r} in these alignments; parts: {', '.join(self.parts)}")
        a, b = self.parts[name]
        return Alignments(self.src[a:b], self.tgt[a:b], self.sure[a:b], self.possible[a:b], {name: (0, b - a)},
                          self.path, self.meta)

    def take(self, n: int) -> Alignments:
        """The first n pairs (every part clipped to them)."""
        parts = {k: (min(a, n), min(b, n)) for k, (a, b) in self.parts.items() if a < n}
        return Alignments(self.src[:n], self.tgt[:n], self.sure[:n], self.possible[:n], parts, self.path, self.meta)

    def find(self, source: str) -> int | None:
        """The index of the first pair whose source line is `source` (stripped), or None."""
        source = source.strip()
        return next((k for k, s in enumerate(self.src) if s == source), None)


def check_links(src: list[str], tgt: list[str], sure: list, possible: list, where: str) -> None:
    """QKVError (one line) unless there is one link line per pair and every link is inside its sentences."""
    if len(sure) != len(src):
        raise QKVError(f"{where} has {len(sure):,} alignment lines but the data has {len(src):,} sentence pairs; "
                       "they must be line-aligned")
    for k, (s, t, links) in enumerate(zip(src, tgt, possible, strict=True)):
        n_src, n_tgt = len(split_words(s)), len(split_words(t))
        bad = next(((i, j) for i, j in links if i >= n_src or j >= n_tgt), None)
        if bad is not None:
            raise QKVError(f"{where} line {k + 1}: link {bad[0]}-{bad[1]} is outside the sentence pair "
                           f"({n_src} source words, {n_tgt} target words)")


def read_alignment_file(path: str | Path, src: list[str], tgt: list[str]) -> Alignments:
    """A Pharaoh link file, line-aligned with `src`/`tgt` (a gold standard, or another aligner's output)."""
    from qkv.data.translation import read_lines

    lines = read_lines(path)
    if len(lines) == len(src) + 1 and lines[-1] == "":
        lines.pop()
    parsed = [parse_links(line, f"{path} line {k + 1}") for k, line in enumerate(lines)]
    sure, possible = [s for s, _ in parsed], [p for _, p in parsed]
    check_links(src, tgt, sure, possible, str(path))
    return Alignments(list(src), list(tgt), sure, possible, {"all": (0, len(src))}, Path(path),
                      {"reference": f"{path} (Pharaoh links)"})


def alignments_root() -> Path:
    from qkv.data.registry import cache_dir

    return cache_dir() / "alignments"


def cache_key(parts: dict[str, tuple[list[str], list[str]]], settings: AlignerSettings) -> str:
    """sha256 over the part names and texts, the eflomal settings, the symmetrisation and the word definition."""
    h = hashlib.sha256()
    head = {"format": FORMAT_VERSION, "words": WORDS_VERSION, "symmetrization": SYMMETRIZATION,
            "settings": asdict(settings)}
    h.update(json.dumps(head, sort_keys=True).encode("utf-8"))
    for name, (src, tgt) in parts.items():
        h.update(f"\0part {name} {len(src)} {len(tgt)}\0".encode())
        for line in (*src, *tgt):
            h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def align_parts(parts: dict[str, tuple[list[str], list[str]]], settings: AlignerSettings | None = None,
                describe: dict | None = None, progress: Callable[[str], None] | None = None) -> Alignments:
    """Reference alignments of the pairs of every part (name -> (source lines, target lines)), aligned as one
    corpus: read from the cache when these inputs were aligned before, else computed with eflomal and cached.
    `describe` (e.g. {"train": "multi30k de-en train"}) is stored in alignment.json; it is not part of the key."""
    settings = settings or AlignerSettings()
    for name, (src, tgt) in parts.items():
        if len(src) != len(tgt):
            raise QKVError(f"part {name!r}: {len(src):,} source lines but {len(tgt):,} target lines; "
                           "they must be line-aligned")
    key = cache_key(parts, settings)
    folder = alignments_root() / key
    if (folder / META_FILE).is_file():
        return load_alignments(folder)
    src = [line for s, _ in parts.values() for line in s]
    tgt = [line for _, t in parts.values() for line in t]
    note = (f"aligning {len(src):,} sentence pairs with eflomal (both directions, then {SYMMETRIZATION}); "
            f"cached in {folder}")
    t0 = time.perf_counter()
    fwd, rev = run_eflomal([" ".join(split_words(s)) for s in src], [" ".join(split_words(t)) for t in tgt],
                           settings, (lambda: progress(note)) if progress else None)
    seconds = time.perf_counter() - t0
    sym = [grow_diag_final_and(f, r, len(split_words(s)), len(split_words(t)))
           for f, r, s, t in zip(fwd, rev, src, tgt, strict=True)]
    spans, start = {}, 0
    for name, (s, _) in parts.items():
        spans[name] = [start, start + len(s)]
        start += len(s)
    meta = {"format": FORMAT_VERSION, "key": key, "aligner": _aligner_name(),
            "symmetrization": SYMMETRIZATION, "words_version": WORDS_VERSION, "settings": asdict(settings),
            "parts": spans, "describe": describe or {}, "pairs": len(src), "seconds": round(seconds, 1)}
    _write_folder(folder, {"src.txt": src, "tgt.txt": tgt, "fwd.txt": [format_links(f) for f in fwd],
                           "rev.txt": [format_links(r) for r in rev], "links.txt": [format_links(s) for s in sym]},
                  meta)
    return load_alignments(folder)


def _write_folder(folder: Path, files: dict[str, list[str]], meta: dict) -> None:
    """Write every file into a temp folder beside `folder`, then rename it into place (all or nothing)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name[:12]}."))
    try:
        for name, lines in files.items():
            (tmp / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process cached the same key first: keep theirs
            if not (folder / META_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_alignments(folder: str | Path) -> Alignments:
    """A cached alignment folder -> `Alignments`; a damaged folder (line counts that disagree) is a QKVError."""
    from qkv.runs import load_json

    folder = Path(folder)
    meta = load_json(folder / META_FILE)
    try:
        src, tgt, links = (_lines(folder / name) for name in ("src.txt", "tgt.txt", "links.txt"))
    except (OSError, UnicodeDecodeError) as e:
        raise QKVError(f"{folder}: cannot read the cached alignment ({e}); delete the folder to recompute it") from None
    if len(src) != len(tgt):
        raise QKVError(f"{folder}: src.txt has {len(src):,} lines but tgt.txt has {len(tgt):,}; "
                       "delete the folder to recompute it")
    parsed = [parse_links(line, f"{folder / 'links.txt'} line {k + 1}") for k, line in enumerate(links)]
    sure = [s for s, _ in parsed]
    check_links(src, tgt, sure, sure, str(folder / "links.txt"))
    parts = {name: (int(a), int(b)) for name, (a, b) in meta.get("parts", {}).items()}
    return Alignments(src, tgt, sure, sure, parts, folder, meta)


def run_eflomal(src_words: list[str], tgt_words: list[str], settings: AlignerSettings,
                started: Callable[[], None] | None = None) -> tuple[list[set], list[set]]:
    """eflomal on space-separated word lines -> (forward links, reverse links), each a set per pair of
    (source word, target word); `started()` is called once eflomal is found, before the work begins.
    eflomal lowercases the words; it leaves sentences of ≥ 1024 words unaligned."""
    try:
        from eflomal import Aligner
    except ImportError:
        raise QKVError("reference alignments need eflomal, which is not installed: pip install 'qkv[align]' "
                       "(it builds from source with a C compiler)") from None
    if started:
        started()
    if len(src_words) != len(tgt_words):
        raise QKVError(f"{len(src_words):,} source lines but {len(tgt_words):,} target lines")
    aligner = Aligner(model=settings.model, n_samplers=settings.n_samplers, null_prior=settings.null_prior,
                      rel_iterations=settings.rel_iterations)
    with tempfile.TemporaryDirectory(prefix="qkv-eflomal-") as tmp:
        fwd_path, rev_path = Path(tmp) / "fwd", Path(tmp) / "rev"
        try:
            aligner.align(src_words, tgt_words, links_filename_fwd=str(fwd_path), links_filename_rev=str(rev_path))
        except Exception as e:  # eflomal raises CalledProcessError / ValueError with multi-line detail
            raise QKVError(f"eflomal failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        fwd = [set(parse_links(line, "eflomal forward links")[0]) for line in _lines(fwd_path)]
        rev = [set(parse_links(line, "eflomal reverse links")[0]) for line in _lines(rev_path)]
    if len(fwd) != len(src_words) or len(rev) != len(src_words):
        raise QKVError(f"eflomal wrote {len(fwd):,}/{len(rev):,} link lines for {len(src_words):,} sentence pairs")
    return fwd, rev


def _aligner_name() -> str:
    """"eflomal 2.0.0": the aligner and its version, as recorded in alignment.json."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"eflomal {version('eflomal')}"
    except PackageNotFoundError:
        return "eflomal"


def _lines(path: Path) -> list[str]:
    """Every line of a file, empty ones included (one per sentence pair, also a pair without links)."""
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


# ------------------------------------------------------------------------------------------------ runs' data
def training_description(data_cfg) -> str:
    """What `training_pairs` reads, in words (stored in alignment.json; `find_reference` matches on it)."""
    if data_cfg.src is None:
        return f"multi30k {data_cfg.direction} train"
    return f"{data_cfg.src} -> {data_cfg.tgt}"


def training_pairs(data_cfg) -> tuple[list[str], list[str], str]:
    """(source lines, target lines, description) of the training corpus of a translation data config: the
    Multi30k train split of its direction, or the whole of its --data.src/--data.tgt files."""
    from qkv.data.translation import multi30k_paths, read_parallel

    if data_cfg.src is None:
        src, tgt = read_parallel(*multi30k_paths(data_cfg.direction, "train"))
    else:
        src, tgt = read_parallel(data_cfg.src, data_cfg.tgt)
    return src, tgt, training_description(data_cfg)


def reference_alignments(data_cfg, name: str = "train", src: Sequence[str] = (), tgt: Sequence[str] = (),
                         description: str = "", settings: AlignerSettings | None = None,
                         progress: Callable[[str], None] | None = None) -> Alignments:
    """eflomal alignments of (`src`, `tgt`), aligned together with the training pairs of `data_cfg`; the part
    `name` (e.g. "test_2016_flickr") of the result. With name "train" only the training pairs are aligned."""
    train_src, train_tgt, train_desc = training_pairs(data_cfg)
    parts = {"train": (train_src, train_tgt)}
    describe = {"train": train_desc}
    if name != "train":
        parts[name] = (list(src), list(tgt))
        describe[name] = description
    return align_parts(parts, settings, describe, progress).part(name)


def find_reference(train_description: str, source: str) -> tuple[Alignments, int] | None:
    """A cached alignment whose training part is `train_description` and that holds the sentence `source`:
    (its alignments, the pair's index), preferring a pair outside the training part; else None."""
    root = alignments_root()
    if not root.is_dir():
        return None
    found = None
    for meta_path in sorted(root.glob(f"*/{META_FILE}")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("describe", {}).get("train") != train_description:
            continue
        src = (meta_path.parent / "src.txt").read_text(encoding="utf-8").split("\n")
        hits = [k for k, s in enumerate(src) if s == source.strip()]
        if not hits:
            continue
        train_end = meta.get("parts", {}).get("train", [0, 0])[1]
        outside = [k for k in hits if k >= train_end]
        if outside or found is None:
            found = (meta_path.parent, (outside or hits)[0])
        if outside:
            break
    if found is None:
        return None
    return load_alignments(found[0]), found[1]
