"""The "Look inside" page's API: `qkv explain` over HTTP, with the same numbers (`Explanation.to_json`).

    GET  /api/explain/topics                    the topics in lesson order, with what a run must be able to do
                                                and whether a topic reads a source the page may give
    POST /api/runs/{name}/explain/{topic}       one topic on one run: every block (text, tensors, tables, checks),
                                                its data, and its pictures as PNG data URLs; a speech run's
                                                recording comes as a WAV data URL (``audio``), else its example

The topic runs on the run's worker like any other request, so it never races a generation on the same model.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request

from qkv.errors import QKVError
from qkv.explain import TOPICS, applies, check_audio, explain
from qkv.server.playground import MEDIA, _checked, _run, _served, data_url_bytes, image_bytes
from qkv.server.schemas import ExplainRequest
from qkv.server.served import HTTPError

router = APIRouter(prefix="/api", tags=["look inside"])


@router.get("/explain/topics")
async def topics() -> list[dict]:
    """Every topic in lesson order, with what a run must be able to do for it (any of `needs`), the source kinds it
    reads (None: any), whether it reads the decoder, and whether it takes a source given by the page."""
    return [{"name": name, "line": t.line, "needs": [c.value for c in t.needs],
             "sources": list(t.sources) if t.sources is not None else None, "decoder": t.decoder,
             "takes_source": t.takes_source} for name, t in TOPICS.items()]


@router.post("/runs/{name}/explain/{topic}")
async def explain_topic(request: Request, name: str, topic: str, req: ExplainRequest) -> dict:
    s = _served(request, name)
    if topic not in TOPICS:
        raise HTTPError(404, f"unknown topic {topic!r}; the topics are: {', '.join(TOPICS)}")
    if not applies(topic, s.run):
        try:
            explain(topic, s.run)  # the one-line refusal `qkv explain` gives
        except QKVError as e:
            raise HTTPError(404, str(e)) from None
    image = _checked(lambda: image_bytes(req.image), "image") if req.image is not None else None
    audio = None
    if req.audio is not None:  # the file's bytes, refused here (422, one line) as `qkv explain --audio` refuses a file
        _checked(lambda: check_audio(topic, s.run), "audio")
        audio = _checked(lambda: data_url_bytes(req.audio, MEDIA["audio"]), "audio")
        _checked(lambda: s.run.read_source(audio), "audio")

    def work():
        e = explain(topic, s.run, text=req.text, src=req.src, image=image, audio=audio, prompt=req.prompt,
                    layer=req.layer, head=req.head, seed=req.seed)
        out = e.to_json()
        out["pictures"] = [{"name": stem, "url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
                           for stem, png in (e.render_pngs() if req.pictures else [])]
        return out

    return await _run(request, s, work)

