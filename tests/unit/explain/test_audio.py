"""`qkv explain audio`: a recording -> log-mel -> conv stem -> encoder states, each step recomputed and checked, then
where each letter listened (attention head) or which states emit it (CTC head). The numbers it prints are the
recording's own (two recordings of different lengths print different sizes), the log-mel step is
`qkv.data.audio.log_mel` exactly, and a bad recording is a one-line error."""

import base64
import json

import pytest
import torch

from helpers import assert_picture, assert_user_error
from qkv.cli.main import main
from qkv.data.audio import HOP, SAMPLE_RATE, log_mel, read_wav, write_wav
from qkv.errors import QKVError
from qkv.explain import explain, topics_for
from qkv.tasks import load_run
from speech_fixtures import digit_clips


@pytest.fixture(scope="module")
def speech(more_runs):
    return load_run(more_runs["speech"])


@pytest.fixture(scope="module")
def ctc(ctc_run_dir):
    return load_run(ctc_run_dir)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict:
    """FSDD's "two" (a take the speech run learned) at 16 kHz as WAV files: whole, and cut to 5,923 samples (0.37 s,
    37 frames: odd, so the model reads 36)."""
    from qkv.data.speech import clip_wave

    folder = tmp_path_factory.mktemp("explain-audio")
    wave = clip_wave(digit_clips(digits=(2,), takes=(11,))[0])
    paths = {"whole": folder / "two.wav", "cut": folder / "two-cut.wav"}
    write_wav(paths["whole"], wave)
    write_wav(paths["cut"], wave[:5923])
    return paths


def qkv(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def sizes(n: int) -> str:
    """What the topic must say of n samples, computed here from its definition."""
    frames = n // HOP  # 10 ms each
    return f"{n / SAMPLE_RATE:.2f} s -> {frames} frames of 10 ms -> {frames // 2} encoder states of 20 ms"


@pytest.mark.parametrize("kind", ["speech", "ctc"])
def test_every_check_holds_on_both_heads_and_the_default_example(kind, speech, ctc):
    run = {"speech": speech, "ctc": ctc}[kind]
    e = explain("audio", run)
    assert all(c.ok for c in e.checks), e.format_text()
    what = [c.what for c in e.checks]
    assert any("qkv.data.audio.log_mel" in w for w in what) and any("model.stem" in w for w in what)
    assert any("model.encode" in w for w in what)
    assert any(("ctc_logits" if kind == "ctc" else "cross") in w for w in what)
    wave = run.example_sources(1)[0]
    assert e.data["samples"] == wave.numel() and sizes(wave.numel()) in e.format_text()
    json.dumps(e.to_json())  # every number serialises


def test_the_log_mel_step_is_log_mel(speech, wavs):
    e = explain("audio", speech, audio=str(wavs["whole"]))
    wave, _ = read_wav(wavs["whole"])
    (block,) = [b for b in e.blocks if b.kind == "tensor" and b.name.startswith("log-mel =")]
    assert block.value.shape == (80, wave.numel() // HOP)
    assert torch.equal(block.value, log_mel(wave))
    frames = next(b for b in e.blocks if b.kind == "tensor" and b.name == "frames").value  # (T, 400)
    assert torch.equal(frames[3], wave[3 * HOP - 200:3 * HOP + 200])  # frame t is centred on sample 160·t


def test_the_numbers_are_the_recordings_own(speech, wavs):
    """Two recordings of different lengths print their own sizes; each letter's peak is where the run's own
    cross-attention (`SpeechRun.cross_attention`, computed apart from the topic) is largest."""
    outs = {}
    for name, path in wavs.items():
        e = explain("audio", speech, audio=str(path))
        n = read_wav(path)[0].numel()
        text = e.format_text()
        assert sizes(n) in text and e.data["states"] == n // HOP // 2
        outs[name] = text
        stack = speech.cross_attention(str(path), speech.decoding(beam=1))
        peaks = stack.weights[-1].mean(dim=0).argmax(dim=-1).tolist()  # last layer, heads averaged: (rows,)
        assert [x["letter"] for x in e.data["letters"]] == stack.rows
        assert [x["state"] for x in e.data["letters"]] == peaks
        assert [x["time"] for x in e.data["letters"]] == pytest.approx([0.02 * s for s in peaks])
        assert e.data["transcript"] == speech.transcribe([str(path)], beam=1)[0]
    assert "the odd last frame is dropped" in outs["cut"] and "the model reads 36" in outs["cut"]
    assert sizes(5923) in outs["cut"] and sizes(5923) not in outs["whole"]


def test_the_ctc_path_is_the_runs_greedy_decoding(ctc, wavs):
    e = explain("audio", ctc, audio=str(wavs["whole"]))
    assert e.data["transcript"] == ctc.transcribe([str(wavs["whole"])])[0]
    with torch.no_grad():
        logits = ctc.model.ctc_logits(ctc.mel(str(wavs["whole"]))[None, :, : e.data["frames_read"]])[0]  # (S, V)
    emitted = [x["state"] for x in e.data["letters"]]
    best = logits.argmax(-1).tolist()
    starts = [s for s in range(len(best)) if best[s] != ctc.tokenizer.pad_id and (s == 0 or best[s - 1] != best[s])]
    assert emitted == starts
    with pytest.raises(QKVError, match="CTC run: it has no decoder"):
        explain("audio", ctc, layer=0)


def test_the_other_source_topics_read_the_recording_given(speech, ctc, wavs):
    for topic in ("qkv", "heads", "self-vs-cross", "decoder-only-vs-encoder-decoder", "output", "encoder-states"):
        e = explain(topic, speech, audio=str(wavs["cut"]))
        assert all(c.ok for c in e.checks), (topic, e.format_text())
        assert str(wavs["cut"]) in e.format_text(), topic
    for topic in ("qkv", "heads"):
        e = explain(topic, ctc, audio=wavs["cut"].read_bytes())
        assert all(c.ok for c in e.checks) and "the recording given" in e.format_text()
        assert "18 positions" in e.format_text()  # 37 frames -> 36 read -> 18 encoder states


def test_the_cli_prints_sizes_and_draws_the_log_mel(speech, more_runs, wavs, capsys, tmp_path):
    rc, out, err = qkv(capsys, "explain", "audio", more_runs["speech"], "--audio", wavs["cut"], "--png", tmp_path)
    assert rc == 0, err
    assert sizes(5923) in out and "check: the log-mel recomputed step by step" in out and "MISMATCH" not in out
    assert_picture(tmp_path / "audio-log-mel.png")
    rc, out, _ = qkv(capsys, "explain", "audio", more_runs["speech"], "--json")
    assert rc == 0 and all(b["ok"] for b in json.loads(out)["blocks"] if b["kind"] == "check")


def test_bad_recordings_and_misplaced_audio_are_one_line_errors(more_runs, tiny_runs, ctc_run_dir, wavs, capsys,
                                                                tmp_path):
    run = more_runs["speech"]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not a recording at all\n")
    rc, _, err = qkv(capsys, "explain", "audio", run, "--audio", tmp_path / "missing.wav")
    assert_user_error(rc, err, "file not found", "missing.wav")
    rc, _, err = qkv(capsys, "explain", "audio", run, "--audio", tmp_path / "empty.wav")
    assert_user_error(rc, err, "empty.wav", "empty file")
    rc, _, err = qkv(capsys, "explain", "audio", run, "--audio", tmp_path / "notes.wav")
    assert_user_error(rc, err, "notes.wav", "not a WAV file")
    rc, _, err = qkv(capsys, "explain", "qkv", tiny_runs["translate"], "--audio", wavs["cut"])
    assert_user_error(rc, err, "reads recordings (speech recognition)", "(--audio)")
    rc, _, err = qkv(capsys, "explain", "tokens", run, "--audio", wavs["cut"])
    assert_user_error(rc, err, "explain tokens reads no recording", "audio goes to audio, qkv")
    rc, _, err = qkv(capsys, "explain", "audio", tiny_runs["lm"])
    assert_user_error(rc, err, "explain audio needs a run that reads recordings")
    rc, _, err = qkv(capsys, "explain", "output", ctc_run_dir, "--audio", wavs["cut"])
    assert_user_error(rc, err, "explain output needs a run that writes text with a decoder")


def test_qkv_explain_ctc_run_dir_says_why_the_decoder_topics_are_not_for_it(ctc, ctc_run_dir, capsys):
    rc, out, _ = qkv(capsys, "explain", ctc_run_dir)
    shown, _, rest = out.partition("not for this run:")
    assert rc == 0
    assert [line.split()[0] for line in shown.splitlines()[1:] if line.startswith("  ")] == topics_for(ctc)
    line = next(x for x in rest.splitlines() if x.strip().startswith("encoder-states"))
    assert "a CTC head has none" in line


# ------------------------------------------------------------------------------------------------ over HTTP
fastapi = pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def client(more_runs):
    from fastapi.testclient import TestClient

    from qkv.server import ServeConfig, create_app, load_runs

    return TestClient(create_app(load_runs([more_runs["speech"], more_runs["caption"]]), ServeConfig()))


def test_the_look_inside_page_takes_an_uploaded_recording(client, wavs):
    url = "data:audio/wav;base64," + base64.b64encode(wavs["cut"].read_bytes()).decode("ascii")
    topics = {t["name"]: t for t in client.get("/api/explain/topics").json()}
    assert topics["audio"]["takes_source"] and topics["audio"]["sources"] == ["audio"]
    assert not topics["tokens"]["takes_source"] and topics["evaluation"]["decoder"]
    r = client.post("/api/runs/speech/explain/audio", json={"audio": url, "pictures": False})
    assert r.status_code == 200, r.text
    e = r.json()
    assert sizes(5923) in " ".join(b["text"] for b in e["blocks"] if b["kind"] == "text")
    assert all(b["ok"] for b in e["blocks"] if b["kind"] == "check")
    r = client.post("/api/runs/speech/explain/audio", json={"pictures": False})  # the run's own example
    assert r.status_code == 200 and r.json()["data"]["samples"] > 0
    for body, needle in [({"audio": "data:audio/wav;base64,bm90IGEgd2F2"}, "not a WAV file"),
                         ({"audio": "data:image/png;base64,AAAA"}, "expected a WAV file")]:
        r = client.post("/api/runs/speech/explain/audio", json=body)
        assert r.status_code == 422 and needle in r.json()["error"], r.text
    r = client.post("/api/runs/speech/explain/tokens", json={"audio": url})
    assert r.status_code == 422 and "reads no recording" in r.json()["error"]
    r = client.post("/api/runs/caption/explain/qkv", json={"audio": url})
    assert r.status_code == 422 and "reads recordings" in r.json()["error"]
    r = client.post("/api/runs/caption/explain/audio", json={})
    assert r.status_code == 404 and "explain audio needs a run that reads recordings" in r.json()["error"]
