"""Human evaluation of speech runs (campaign kind audio-to-text), with the tiny transcriber of tests/serve_fixtures.py
(it learned FSDD's "zero", "one" and "two" of one speaker by heart) and a CTC one, through the real CLI:

- sources from the runs' own held-out recordings (``--data validation``), from a speech folder, or from a src file
  of WAV paths: each item stored as a 16-bit WAV data URL of what the run reads, the candidates the runs'
  transcripts of exactly that recording;
- bad input (a src line that is not a WAV, a missing file, sampled or not) is a one-line error naming the line,
  and nothing is written;
- the rater API serves the recordings under a policy that lets the page's <audio> play data: URLs; judgements,
  the report and the export work as for text.
"""

from __future__ import annotations

import base64
import csv
import json

import numpy as np
import pytest
import torch

from helpers import assert_user_error, qkv, rate_campaign
from qkv.data.audio import SAMPLE_RATE, read_wav
from qkv.humaneval.store import Store
from qkv.tasks import load_run

WAV_URL = "data:audio/wav;base64,"


@pytest.fixture(scope="module")
def speech(more_runs, ctc_speech_run) -> dict:
    """The session's speech run, its speech folder (30 FSDD clips), and the session's CTC run trained 4 steps on it."""
    return {"speech": more_runs["speech"], "ctc": ctc_speech_run, "data": more_runs["speech"].parent / "speech-data"}


def wave_of(url: str) -> torch.Tensor:
    assert url.startswith(WAV_URL)
    wave, notes = read_wav(base64.b64decode(url.removeprefix(WAV_URL)))
    assert notes == []  # already 16 kHz, mono, 16-bit: what the run reads
    return wave


def create(capsys, db, *args) -> tuple[int, str, str]:
    return qkv(capsys, "human-eval", "create", *args, "--db", db, "--no-progress")


# ------------------------------------------------------------------------------------------------ sources
def test_a_campaign_of_the_runs_own_held_out_recordings(speech, tmp_path, capsys):
    db = tmp_path / "he.db"
    rc, out, err = create(capsys, db, "digits", "--runs", speech["speech"], speech["ctc"], "--data", "validation",
                          "--n", "4", "--raters", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"campaign digits: audio-to-text, 2 system(s) (speech, ctc), 4 items from {speech['data']} "
                        f"(validation), 2 raters, 5 tasks each (1 quality control) -> {db}")
    assert lines[1].startswith("rater1: http://127.0.0.1:8000/rate/") and lines[3].startswith("serve the rater pages")
    run, ctc = load_run(speech["speech"]), load_run(speech["ctc"])
    waves, texts, _ = run.reference_pairs()
    with Store(db) as store:
        camp, items = store.campaign("digits"), store.items("digits")
        cands = {(c["item"], c["system"]): c["text"] for c in store.candidates("digits") if c["bad_of"] is None}
    assert camp["kind"] == "audio-to-text" and camp["spec"]["data"] == "validation" and camp["spec"]["available"] == 6
    for item in items:
        heard = wave_of(item["source"])  # the held-out recording, as 16-bit PCM
        k = item["line"]
        assert torch.allclose(heard, waves[k], atol=1 / 32768) and item["reference"] == texts[k]
        data = base64.b64decode(item["source"].removeprefix(WAV_URL))  # what the raters hear is what was transcribed
        assert cands[item["position"], "speech"] == run.to_text([data])[0]  # the run's transcript of what they hear
        assert cands[item["position"], "ctc"] == ctc.to_text([data])[0]


def test_a_campaign_from_a_speech_folder(speech, tmp_path, capsys):
    db = tmp_path / "he.db"
    rc, out, err = create(capsys, db, "folder", "--runs", speech["speech"], "--data", speech["data"], "--n", "3",
                          "--raters", "1")
    assert rc == 0, err
    assert f"3 items from {speech['data']} (every recording listed), 1 raters" in out.splitlines()[0]
    lines = (speech["data"] / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    with Store(db) as store:
        items = store.items("folder")
    assert len(items) == 3 and all(it["source"].startswith(WAV_URL) for it in items)
    for it in items:
        listed = json.loads(lines[it["line"]])
        want, _ = read_wav(speech["data"] / listed["audio"])  # FSDD's 8 kHz, resampled as the run reads it
        assert it["reference"] == listed["text"] and torch.allclose(wave_of(it["source"]), want, atol=1 / 32768)


def test_a_campaign_from_a_src_file_of_wav_paths_notes_each_conversion(speech, tmp_path, capsys):
    from scipy.io import wavfile

    clips = sorted((speech["data"] / "audio").glob("*.wav"))[:2]
    stereo = tmp_path / "stereo 44k.wav"  # 0.5 s of a 440 Hz tone, two channels at 44.1 kHz
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(22050) / 44100) * 32767).astype(np.int16)
    wavfile.write(stereo, 44100, np.stack([tone, tone], axis=1))
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text(f"{clips[0]}\n\n{stereo}\n{clips[1]}\n", encoding="utf-8")
    ref.write_text("first\nlost\na tone\n\n", encoding="utf-8")
    db = tmp_path / "he.db"
    rc, out, err = create(capsys, db, "files", "--runs", speech["speech"], "--src", src, "--ref", ref)
    assert rc == 0, err
    assert f"3 items from {src} -> {ref}" in out.splitlines()[0]
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert f"note: asked for 100 items but {src} -> {ref} has 3 non-empty sources: using all" in notes
    assert f"note: {stereo}: stereo, downmixed to mono; {stereo}: 44100 Hz, resampled to 16000 Hz" in notes
    with Store(db) as store:
        items = store.items("files")
    assert [(it["line"], it["reference"]) for it in items] == [(0, "first"), (2, "a tone"), (3, None)]
    assert len(wave_of(items[1]["source"])) == SAMPLE_RATE // 2  # 0.5 s at 16 kHz


def _not_wav(d):
    (d / "notes.txt").write_text("hello\n", encoding="utf-8")
    return d / "notes.txt", "line 2 of {src}: {d}/notes.txt: not a WAV file (it starts with the text 'hello\\n')"


def _missing(d):
    return d / "gone.wav", "line 2 of {src}: file not found: {d}/gone.wav"


def _too_short(d):
    from qkv.data.audio import write_wav

    write_wav(d / "blip.wav", torch.zeros(100))
    return d / "blip.wav", "line 2 of {src}: {d}/blip.wav: too short: 6.2 ms of audio"


@pytest.mark.parametrize("bad", [_not_wav, _missing, _too_short], ids=["not a wav", "missing", "too short"])
@pytest.mark.parametrize("n", [1, 100], ids=["sampled out", "sampled"])
def test_a_bad_src_line_is_one_line_naming_it_and_writes_nothing(speech, tmp_path, capsys, bad, n):
    clip = sorted((speech["data"] / "audio").glob("*.wav"))[0]
    path, message = bad(tmp_path)
    src = tmp_path / "src.txt"
    src.write_text(f"{clip}\n{path}\n{clip}\n", encoding="utf-8")
    db = tmp_path / "he.db"
    rc, _, err = create(capsys, db, "x", "--runs", speech["speech"], "--src", src, "--n", n)
    assert_user_error(rc, err, message.format(src=src, d=tmp_path))
    assert not db.exists() and not list(tmp_path.glob("he.db*"))
    Store(db, create=True).close()  # into an existing store: it stays byte for byte as it was
    before = db.read_bytes()
    rc, _, err = create(capsys, db, "x", "--runs", speech["speech"], "--src", src, "--n", n)
    assert_user_error(rc, err, message.format(src=src, d=tmp_path))
    assert db.read_bytes() == before


def test_a_speech_run_and_a_text_run_are_refused_together(speech, more_runs, tmp_path, capsys):
    src = tmp_path / "src.txt"
    src.write_text("a\n", encoding="utf-8")
    rc, _, err = create(capsys, tmp_path / "he.db", "x", "--runs", speech["speech"], more_runs["caption"], "--src",
                        src)
    assert_user_error(rc, err, "the runs must write the same kind of text", "speech is audio-to-text",
                      "caption is image-to-text")


# ------------------------------------------------------------------------------------------------ rating
def test_the_rater_api_serves_recordings_the_page_may_play_and_the_results_export(speech, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from qkv.server import ServeConfig, create_app
    from qkv.server.app import CSP
    from qkv.server.rating import RATE_CSP

    assert RATE_CSP == CSP + "; media-src 'self' data:"  # the server's policy, plus data: recordings
    db = tmp_path / "he.db"
    assert create(capsys, db, "sp", "--runs", speech["speech"], speech["ctc"], "--data", "validation", "--n", "3",
                  "--raters", "2")[0] == 0
    with Store(db) as store:
        tokens = [r["token"] for r in store.campaign("sp")["raters"]]
    client = TestClient(create_app({}, ServeConfig(db=db, admin_token="k" * 32)))
    page = client.get(f"/rate/{tokens[0]}")
    assert page.status_code == 200 and page.headers["content-security-policy"] == RATE_CSP
    assert client.get("/admin").headers["content-security-policy"] == CSP  # only the rater page plays recordings
    status = client.get(f"/api/rate/{tokens[0]}").json()
    assert status["kind"] == "audio-to-text" and status["pairwise"] is True
    task = client.get(f"/api/rate/{tokens[0]}/tasks/0").json()
    assert len(wave_of(task["source"])) > 400 and "reference" not in task  # the rater hears it, reads no reference
    assert {c["slot"] for c in task["candidates"]} == {"A", "B"}
    body = {"candidates": {str(c["id"]): {"accuracy": 90, "fluency": 80, "spans": []} for c in task["candidates"]},
            "preference": "A"}
    r = client.post(f"/api/rate/{tokens[0]}/tasks/{task['task_id']}", json=body)
    assert r.status_code == 200 and r.json()["done"] == 1
    with Store(db) as store:
        n = rate_campaign(store, "sp", lambda rater, system, item, bad: (20 if bad else 90, 80), raters=["rater2"])
    rc, out, _ = qkv(capsys, "human-eval", "report", "sp", "--db", db)
    assert rc == 0 and out.startswith("campaign sp: audio-to-text, 2 system(s) (speech, ctc), 3 items from")
    assert f"judged {1 + n} of {2 * n} tasks" in out
    rc, out, _ = qkv(capsys, "human-eval", "export", "sp", "--db", db, "--out", tmp_path / "out")
    assert rc == 0 and out.splitlines()[0] == f"wrote {tmp_path / 'out' / 'sp-judgements.csv'} ({2 * (1 + n)} rows)"
    with open(tmp_path / "out" / "sp-judgements.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (1 + n) and all(row["source"].startswith(WAV_URL) for row in rows)
    assert {row["reference"] for row in rows} <= {"zero", "one", "two"}
    exported = client.get("/api/admin/campaigns/sp/export.jsonl", headers={"authorization": "Bearer " + "k" * 32})
    assert exported.status_code == 200 and len(exported.text.splitlines()) == len(rows)
