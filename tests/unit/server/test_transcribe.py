"""The playground's API for a run that reads recordings (``source_kind`` "audio"), through FastAPI's test client on
the tiny speech run (tests/serve_fixtures.py: FSDD "zero", "one", "two" of one speaker): a WAV data URL is read as
`qkv transcribe` reads a file, the answer equals the run's own calls, and every bad recording is a JSON 4xx with
one line naming the field. A CTC run answers its transcript without attention."""

import base64
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import wavfile
from scipy.signal import resample_poly

from qkv.data.audio import SAMPLE_RATE, read_wav
from qkv.data.images import png_bytes
from qkv.data.speech import DIGIT_WORDS
from qkv.server import ServeConfig, create_app, load_runs
from qkv.server.playground import WAV_DATA_URL, audio_limits
from qkv.server.schemas import MAX_AUDIO
from speech_fixtures import digit_clips

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def served(more_runs):
    return load_runs([more_runs["speech"], more_runs["caption"]])


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served, ServeConfig()))


@pytest.fixture(scope="module")
def clip():
    """An FSDD recording the tiny run learned (8 kHz mono 16-bit, as FSDD ships them)."""
    return digit_clips(digits=(0,), takes=(10,))[0]


def wav_url(data: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(data).decode("ascii")


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    """(N,) or (N, channels) floats in [-1, 1] -> a 16-bit PCM WAV file's bytes."""
    buf = io.BytesIO()
    wavfile.write(buf, rate, np.clip(np.round(x * 32768), -32768, 32767).astype("<i2"))
    return buf.getvalue()


def transcribe(client, data: bytes, **options):
    return client.post("/api/runs/speech/to-text", json={"audio": wav_url(data), **options})


# ------------------------------------------------------------------------------------------------ the page
def test_a_run_that_reads_audio_gets_the_transcribe_page_and_its_limits(client, served):
    r = client.get("/api/runs/speech").json()
    assert r["pages"][0] == "transcribe" and r["source_kind"] == "audio"
    max_frames = served["speech"].run.model.config.max_frames  # 300 frames of 10 ms
    assert r["audio"] == audio_limits(max_frames, ServeConfig().max_upload_bytes)
    assert r["audio"]["sample_rate"] == SAMPLE_RATE and r["audio"]["max_seconds"] == 3.0
    assert r["audio"]["record_seconds"] == 3.0  # the 2 MiB upload limit holds the model's whole 3 s
    page = client.get("/runs/speech/transcribe")
    assert page.status_code == 200 and "/static/wav.js" in page.text and "/static/totext.js" in page.text
    assert client.get("/runs/speech/translate").status_code == 404
    assert client.get("/static/wav.js").status_code == 200


@pytest.mark.parametrize("body_limit", [65536, 200_000])
def test_the_longest_recording_the_page_may_send_fits_the_body_limit(served, body_limit):
    """A body with the longest 16-bit recording `audio_limits` allows, and every option the page sends, is read
    (not a 413); with a larger body limit the model's own limit is the one that counts."""
    client = TestClient(create_app(served, ServeConfig(max_upload_bytes=body_limit)))
    limits = client.get("/api/runs/speech").json()["audio"]
    assert limits == audio_limits(served["speech"].run.model.config.max_frames, body_limit)
    n = round(limits["record_seconds"] * SAMPLE_RATE)
    data = wav_bytes(np.sin(np.arange(n) / 7) * 0.1, SAMPLE_RATE)
    assert len(data) <= limits["max_wav_bytes"]
    body = {"audio": wav_url(data), "beam": 16, "n_best": 16, "length_penalty": 4.25}
    assert len(json.dumps(body)) <= body_limit
    r = client.post("/api/runs/speech/to-text", json=body)
    assert r.status_code == 200, r.text
    assert abs(r.json()["audio_seconds"] - limits["record_seconds"]) < 0.01
    if body_limit == 200_000:
        assert limits["record_seconds"] == limits["max_seconds"] == 3.0


def test_a_large_body_limit_leaves_the_audio_field_its_own_limit():
    """With a body limit of 100 MB the request's `audio` field (MAX_AUDIO characters) is what limits the WAV file:
    the longest recording the page may send still fits it, and a model's longer limit is cut to it."""
    limits = audio_limits(10_000, 100_000_000)  # a model of 100 s
    assert len(WAV_DATA_URL) + math.ceil(limits["max_wav_bytes"] / 3) * 4 <= MAX_AUDIO
    assert limits["max_seconds"] == 100.0 and 90 < limits["record_seconds"] < 100
    assert 2 * round(limits["record_seconds"] * SAMPLE_RATE) + 44 <= limits["max_wav_bytes"]


# ------------------------------------------------------------------------------------------------ transcribing
def test_an_fsdd_recording_gets_the_runs_transcript_nbest_attention_and_spectrogram(client, served, clip):
    run = served["speech"].run
    word = DIGIT_WORDS[clip.digit]
    assert run.to_text([str(clip.path)]) == [word]  # the run learned it
    data = clip.path.read_bytes()
    r = transcribe(client, data)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["nbest"][0]["text"] == word and out["nbest"][0]["labels"] == [*word]
    assert out["notes"] == "the upload: 8000 Hz, resampled to 16000 Hz"
    wave, _ = read_wav(clip.path)
    assert out["audio_seconds"] == round(len(wave) / SAMPLE_RATE, 3)
    # beam search: the n-best with their log-probabilities, as the run ranks them
    beam = transcribe(client, data, beam=3, n_best=3).json()
    want = run.n_best(wave, run.decoding(beam=3), 3)
    assert [h["text"] for h in beam["nbest"]] == [h["text"] for h in want]
    assert [h["logprob"] for h in beam["nbest"]] == pytest.approx([h["logprob"] for h in want])
    assert all(h["logprob"] < 0 for h in beam["nbest"])
    # the cross-attention of each character over the encoder states (20 ms each), over the log-mel spectrogram
    a = out["attention"]
    stack = run.cross_attention(wave, run.decoding())
    assert a["rows"] == [*word, "<eos>"] and a["cols"] == stack.cols and a["cols"][1] == "0.02s"
    w = torch.tensor(a["weights"])  # (L, H, rows, cols)
    assert w.shape == stack.weights.shape and torch.allclose(w, stack.weights, atol=1e-4)
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-3)
    assert (a["mels"], a["mel_frames"]) == tuple(stack.spectrogram.shape) == (80, len(wave) // 160)
    assert len(a["cols"]) == (a["mel_frames"] + 1) // 2  # the stem's stride 2: one state per 2 mel frames
    spec = np.asarray(Image.open(io.BytesIO(base64.b64decode(a["spectrogram"].split(",", 1)[1]))))
    assert spec.shape == (80, a["mel_frames"]) and spec.min() == 0 and spec.max() == 255
    mel = stack.spectrogram.numpy()[::-1]  # low bands at the bottom, the quietest cell black, the loudest white
    assert np.abs(spec - np.round((mel - mel.min()) / (mel.max() - mel.min()) * 255)).max() <= 1


def test_a_stereo_44k_wav_is_read_with_a_note_for_each_conversion(served, clip):
    """A 44.1 kHz stereo file (120 kB: over the default body limit of other requests) is downmixed and
    resampled, the notes say so, and the transcript is the run's own for the same bytes."""
    client = TestClient(create_app(served, ServeConfig(max_upload_bytes=400_000)))
    x, _ = read_wav(clip.path)  # 16 kHz
    x44 = resample_poly(x.numpy().astype(np.float64), 441, 160)
    data = wav_bytes(np.stack([x44, 0.5 * x44], axis=1), 44100)
    r = transcribe(client, data)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["notes"] == "the upload: stereo, downmixed to mono; the upload: 44100 Hz, resampled to 16000 Hz"
    assert out["nbest"][0]["text"] == served["speech"].run.to_text([data])[0] == DIGIT_WORDS[clip.digit]
    assert out["audio_seconds"] == pytest.approx(len(x44) / 44100, abs=1e-3)


def test_a_wav_the_page_recorded_needs_no_conversion(client, clip):
    """16-bit mono at 16 kHz (what the page writes) is read as it is: no note."""
    x, _ = read_wav(clip.path)
    out = transcribe(client, wav_bytes(x.numpy(), SAMPLE_RATE)).json()
    assert out["notes"] == "" and out["nbest"][0]["text"] == DIGIT_WORDS[clip.digit]


# ------------------------------------------------------------------------------------------------ bad recordings
def _empty_wav() -> bytes:
    return wav_bytes(np.zeros(0), SAMPLE_RATE)


BAD = [
    ("bad base64", {"audio": "data:audio/wav;base64,UklGR!!!"}, "audio: the data URL's base64 is not valid"),
    ("bad padding", {"audio": "data:audio/wav;base64,UklGRg"}, "audio: the data URL's base64 is not valid"),
    ("not a data URL", {"audio": "UklGRg=="}, "audio: expected a WAV file as a base64 data URL"),
    ("not base64", {"audio": "data:audio/wav,RIFF"}, "audio: expected a WAV file as a base64 data URL"),
    ("an image's type", {"audio": "data:image/png;base64,AAAA"}, "got the media type 'image/png'"),
    ("no bytes", {"audio": "data:audio/wav;base64,"}, "audio: the data URL holds no data"),
    ("not a WAV", {"audio": wav_url(b"hello, this is text")}, "audio: the upload: not a WAV file"),
    ("a PNG", {"audio": wav_url(png_bytes(torch.zeros(3, 8, 8)))}, "not a WAV file (it looks like a PNG image)"),
    ("an empty WAV", {"audio": wav_url(_empty_wav())}, "no audio: the WAV file holds 0 samples"),
    ("10 ms", {"audio": wav_url(wav_bytes(np.zeros(160), SAMPLE_RATE))}, "too short: 10.0 ms of audio"),
    ("cut header", {"audio": wav_url(_empty_wav()[:20])}, "audio: the upload:"),
    ("text for audio", {"text": "zero"}, "audio: speech reads recordings"),
    ("two sources", {"audio": "data:audio/wav;base64,AAAA", "text": "x"}, "give one source"),
    ("an unknown field", {"audio": "data:audio/wav;base64,AAAA", "wav": 1}, "wav: Extra inputs are not permitted"),
    ("beam 0", {"audio": "data:audio/wav;base64,AAAA", "beam": 0}, "beam"),
]


@pytest.mark.parametrize(("body", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_recording_is_a_json_422_with_one_line(client, body, needle):
    r = client.post("/api/runs/speech/to-text", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert needle in err and "\n" not in err and len(err) < 300


def test_a_text_source_to_an_audio_run_names_the_field_audio(client):
    err = client.post("/api/runs/speech/to-text", json={"text": "zero"}).json()["error"]
    assert err == "audio: speech reads recordings; give a WAV file as a data URL (data:audio/wav;base64,...)"


def test_a_recording_over_the_upload_limit_is_a_json_413_and_other_requests_keep_the_body_limit(served):
    """A request that carries a file (to-text) gets max_upload_bytes; any other request keeps max_body_bytes."""
    client = TestClient(create_app(served, ServeConfig(max_body_bytes=1000, max_upload_bytes=65536)))
    data = wav_bytes(np.zeros(3 * SAMPLE_RATE), SAMPLE_RATE)  # 96 kB: 128 kB of base64
    r = transcribe(client, data)
    assert r.status_code == 413 and r.json() == {"error": "the request body is over the 65,536-byte limit"}
    small = wav_bytes(np.zeros(SAMPLE_RATE // 4), SAMPLE_RATE)  # 8 kB: over the body limit, under the upload one
    assert transcribe(client, small).status_code == 200
    r = client.post("/api/runs/speech/attention", json={"text": "x" * 2000})
    assert r.status_code == 413 and r.json() == {"error": "the request body is over the 1,000-byte limit"}
    client = TestClient(create_app(served, ServeConfig(max_upload_bytes=65536)))
    body = json.dumps({"audio": wav_url(data)}).encode()  # chunked: no Content-Length
    r = client.post("/api/runs/speech/to-text", content=iter([body[:40_000], body[40_000:]]),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "\n" not in r.json()["error"]


def test_a_recording_longer_than_the_model_reads_is_cut_with_a_note(served):
    client = TestClient(create_app(served, ServeConfig(max_upload_bytes=400_000)))
    r = transcribe(client, wav_bytes(np.sin(np.arange(4 * SAMPLE_RATE) / 9) * 0.1, SAMPLE_RATE))
    out = r.json()
    assert r.status_code == 200 and out["audio_seconds"] == 3.0
    assert out["notes"] == "the upload: 4.0 s is longer than the model's 3.0 s; transcribed the first 3.0 s"


# ------------------------------------------------------------------------------------------------ a CTC run
@pytest.fixture(scope="module")
def ctc_client(ctc_speech_run):
    """A transcriber with a CTC head (no decoder), trained a few steps: a transcript to show, no cross-attention."""
    path = ctc_speech_run
    runs = load_runs([path])
    return TestClient(create_app(runs, ServeConfig())), runs["ctc"].run


def test_a_ctc_run_answers_its_transcript_and_says_it_has_no_attention(ctc_client, clip):
    client, run = ctc_client
    assert client.get("/api/runs/ctc").json()["pages"][0] == "transcribe"
    r = client.post("/api/runs/ctc/to-text", json={"audio": wav_url(clip.path.read_bytes())})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["attention"] is None and "CTC run" in out["no_attention"] and "no cross-attention" in out["no_attention"]
    assert out["nbest"] == [{"text": run.to_text([str(clip.path)])[0], "logprob": None, "labels": None, "score": None,
                             "finished": True}]
    r = client.post("/api/runs/ctc/to-text", json={"audio": wav_url(clip.path.read_bytes()), "beam": 4})
    assert r.status_code == 422 and r.json()["error"].startswith("decoding: ctc is a CTC run: it decodes greedily")


# ------------------------------------------------------------------------------------------------ images still
def test_an_image_run_reads_its_data_url_as_before(client, served):
    run = served["caption"].run
    scene = run.example_sources(1)[0]
    r = client.post("/api/runs/caption/to-text", json={"image": "data:image/png;base64," +
                                                       base64.b64encode(png_bytes(scene)).decode()})
    assert r.status_code == 200, r.text
    assert r.json()["nbest"][0]["text"] == run.n_best(scene, run.decoding(), 1)[0]["text"]
    assert r.json()["attention"]["image"].startswith("data:image/png;base64,")
    r = client.post("/api/runs/caption/to-text", json={"audio": "data:audio/wav;base64,AAAA"})
    assert r.status_code == 422 and r.json()["error"].startswith("image: caption reads images")
    r = client.post("/api/runs/caption/to-text", json={"image": "data:audio/wav;base64,AAAA"})
    assert r.status_code == 422 and "got the media type 'audio/wav'" in r.json()["error"]
