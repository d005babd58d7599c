"""Speech datasets: the folder format's round trip and its one-line errors; FSDD in the registry (the shipped file
list against the copy's SHA256SUMS, files in a subfolder downloaded), its split by takes and leave-one-speaker-out;
connected digits (text, length, one speaker, seeds, split purity, noise at the asked SNR); the command grammar
and its held-out templates and voices; espeak-ng synthesis; and `qkv data speech` writing a folder that reads
back, the same for the same seed."""

import hashlib
import json
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from data_server import DataServer
from helpers import assert_user_error, qkv
from qkv.data import commands
from qkv.data.audio import SAMPLE_RATE, read_wav, write_wav
from qkv.data.registry import DATASETS, DatasetInfo, RemoteFile, resolve
from qkv.data.speech import (
    DIGIT_WORDS,
    FSDD_ACCENTS,
    TRANSCRIPTS_FILE,
    add_noise,
    clip_wave,
    connected_digits,
    fsdd_clips,
    fsdd_split,
    read_speech_folder,
    write_speech_folder,
)
from qkv.errors import QKVError

needs_espeak = pytest.mark.skipif(not commands.espeak_available(),
                                  reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")


@pytest.fixture(scope="module")
def fsdd() -> Path:
    """FSDD's folder, found as qkv finds datasets ($QKV_DATA_DIR/fsdd, else the cache), never downloaded; like
    conftest's `shared_data`, a clear failure when this machine lacks it."""
    try:
        return resolve("fsdd", download=False)
    except QKVError:
        pytest.fail("these tests need the Free Spoken Digit Dataset, which is neither under $QKV_DATA_DIR nor in the "
                    "cache: set QKV_DATA_DIR to ../shared/data or run `qkv data get fsdd`")


@pytest.fixture(scope="module")
def clips(fsdd):
    return fsdd_clips(fsdd / "recordings")


def _tone(seconds: float, hz: float = 440.0) -> torch.Tensor:
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * torch.sin(2 * torch.pi * hz * t)).float()


# ------------------------------------------------------------------------------------------------ FSDD in the registry
def test_the_shipped_file_list_matches_the_copys_sha256sums(fsdd):
    listed = {f.name: f for f in DATASETS["fsdd"].files}
    sums = dict(reversed(line.split("  ", 1)) for line in (fsdd / "SHA256SUMS").read_text().splitlines())
    assert len(listed) == len(sums) == 3000
    assert {name: f.sha256 for name, f in listed.items()} == {f"recordings/{n}": sha for n, sha in sums.items()}
    assert all(f.size == (fsdd / name).stat().st_size for name, f in listed.items())
    f = listed["recordings/7_jackson_32.wav"]
    assert f.url == "https://github.com/Jakobovski/free-spoken-digit-dataset/raw/26eb9aa/recordings/7_jackson_32.wav"


def test_qkv_data_get_checks_the_local_copy_in_one_line(capsys, fsdd):
    rc, out, err = qkv(capsys, "data", "get", "fsdd")  # conftest closes QKV_DATA_URL: nothing can be downloaded
    assert rc == 0, err
    assert out == f"ok  sha256  3,000 of 3,000 files in {fsdd}\n"


def test_files_in_a_subfolder_download_and_a_failure_leaves_no_folder(monkeypatch, tmp_path):
    """FSDD's files are recordings/<file>: the folder is made as they come, and a failed first download leaves
    neither it nor the dataset's folder behind."""
    data = {"recordings/a.wav": b"one" * 100, "recordings/b.wav": b"two" * 100}
    info = DatasetInfo("nested", "a test dataset", tuple(
        RemoteFile(name, f"https://example.invalid/{name}", hashlib.sha256(body).hexdigest(), len(body))
        for name, body in data.items()))
    monkeypatch.delenv("QKV_DATA_DIR", raising=False)
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(DATASETS, "nested", info)
    (tmp_path / "mirror" / "nested" / "recordings").mkdir(parents=True)
    (tmp_path / "mirror" / "nested" / "recordings" / "b.wav").write_bytes(data["recordings/b.wav"])
    with DataServer(tmp_path / "mirror") as server, pytest.raises(QKVError, match="nested/recordings/a.wav"):
        resolve("nested", base_url=server.url)
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "mirror" / "nested" / "recordings" / "a.wav").write_bytes(data["recordings/a.wav"])
    with DataServer(tmp_path / "mirror") as server:
        folder = resolve("nested", base_url=server.url)
    assert sorted(p.name for p in (folder / "recordings").iterdir()) == ["a.wav", "b.wav"]


# ------------------------------------------------------------------------------------------------ the folder format
def test_a_speech_folder_reads_back_what_was_written(tmp_path):
    items = [(_tone(0.5), "three one four", {"speaker": "jackson", "digits": "314"}),
             (_tone(0.3, 220).numpy(), "turn the kitchen light off", {"voice": "en-us+f3", "rate": 150}),
             (_tone(0.2), "zero", {})]
    assert write_speech_folder(tmp_path / "out", items) == 3
    back = read_speech_folder(tmp_path / "out")
    assert [(i.text, i.speaker, i.meta) for i in back] == [
        ("three one four", "jackson", {"digits": "314"}),
        ("turn the kitchen light off", None, {"voice": "en-us+f3", "rate": 150}),
        ("zero", None, {})]
    assert [i.audio.relative_to(tmp_path / "out").as_posix() for i in back] == [
        "audio/000000.wav", "audio/000001.wav", "audio/000002.wav"]
    for item, (wave, _, _) in zip(back, items, strict=True):
        read, _ = read_wav(item.audio)
        assert torch.allclose(read, torch.as_tensor(wave), atol=1 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp sibling left


def test_writing_refuses_a_full_folder_and_an_error_leaves_nothing(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(QKVError, match="already exists and is not empty"):
        write_speech_folder(tmp_path / "full", [(_tone(0.1), "one", {})])
    with pytest.raises(QKVError, match="item 1: the text must be a non-empty string"):
        write_speech_folder(tmp_path / "new", [(_tone(0.1), "one", {}), (_tone(0.1), "  ", {})])
    with pytest.raises(QKVError, match="no items"):
        write_speech_folder(tmp_path / "none", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine to fill
    assert write_speech_folder(tmp_path / "empty", [(_tone(0.1), "one", {})]) == 1


def _folder(root: Path, lines: list[str] | None, wavs=("a.wav",)) -> Path:
    root.mkdir()
    (root / "audio").mkdir()
    for name in wavs:
        write_wav(root / "audio" / name, _tone(0.1))
    if lines is not None:
        (root / TRANSCRIPTS_FILE).write_text("".join(line + "\n" for line in lines))
    return root


GOOD = '{"audio": "audio/a.wav", "text": "one"}'


@pytest.mark.parametrize("lines, needles", [
    (None, ["has no transcripts.jsonl"]),
    ([], ["transcripts.jsonl: empty, no transcripts"]),
    (["", "  "], ["transcripts.jsonl: empty, no transcripts"]),
    ([GOOD, '{"audio": "audio/a.wav", "text": "one"'], ["transcripts.jsonl:2: malformed JSON"]),
    (['["audio/a.wav", "one"]'], ["transcripts.jsonl:1: expected a JSON object"]),
    (['{"text": "one"}'], ["transcripts.jsonl:1:", "\"audio\" must be the path"]),
    (['{"audio": "audio/a.wav"}'], ["transcripts.jsonl:1:", "\"text\" must be a string"]),
    ([GOOD, '{"audio": "audio/a.wav", "text": " "}'], ["transcripts.jsonl:2: empty text for audio/a.wav"]),
    (['{"audio": "audio/a.wav", "text": "one", "speaker": 3}'], ["\"speaker\" must be a string"]),
    (['{"audio": "audio/b.wav", "text": "one"}'], ["transcripts.jsonl:1: audio file not found", "b.wav"]),
    (['{"audio": "../outside.wav", "text": "one"}'], ["transcripts.jsonl:1: audio path '../outside.wav' is outside"]),
    (['{"audio": "/etc/hostname", "text": "one"}'], ["audio path '/etc/hostname' is outside the folder"]),
], ids=["no-transcripts", "empty", "blank-lines", "malformed", "not-object", "no-audio", "no-text", "empty-text",
        "bad-speaker", "missing-audio", "escapes", "absolute"])
def test_a_bad_folder_is_one_line_naming_the_file_and_line(tmp_path, lines, needles):
    write_wav(tmp_path / "outside.wav", _tone(0.1))  # exists: only its place is wrong
    folder = _folder(tmp_path / "f", lines)
    with pytest.raises(QKVError) as e:
        read_speech_folder(folder)
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(QKVError, match="speech folder not found"):
        read_speech_folder(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------ FSDD splits
def test_fsdd_splits_by_takes(clips):
    train, test = fsdd_split(clips, "train"), fsdd_split(clips, "test")
    assert (len(clips), len(train), len(test)) == (3000, 2700, 300)
    assert {c.take for c in test} == set(range(5)) and {c.take for c in train} == set(range(5, 50))
    assert not {c.path for c in train} & {c.path for c in test}
    assert {c.speaker for c in clips} == set(FSDD_ACCENTS) and {c.digit for c in test} == set(range(10))


def test_leave_one_speaker_out(clips):
    train = fsdd_split(clips, "train", exclude=["theo"])
    test = fsdd_split(clips, "test", speakers=["theo"])
    assert len(train) == 2250 and "theo" not in {c.speaker for c in train}
    assert len(test) == 50 and {c.speaker for c in test} == {"theo"}
    with pytest.raises(QKVError, match="unknown speaker 'zoe'; FSDD's speakers: george"):
        fsdd_split(clips, "train", exclude=["zoe"])
    with pytest.raises(QKVError, match="unknown split 'dev'"):
        fsdd_split(clips, "dev")


# ------------------------------------------------------------------------------------------------ connected digits
def test_connected_digits_say_their_digits_by_one_speaker(clips):
    train = fsdd_split(clips, "train")
    by_stem = {c.path.stem: c for c in clips}
    for seed in range(6):
        wave, text, meta = connected_digits(train, np.random.default_rng(seed))
        assert wave.dtype == torch.float32 and wave.ndim == 1 and float(wave.abs().max()) <= 1
        assert text == " ".join(DIGIT_WORDS[int(d)] for d in meta["digits"]) and 1 <= len(meta["digits"]) <= 7
        used = [by_stem[stem] for stem in meta["clips"]]
        assert [c.digit for c in used] == [int(d) for d in meta["digits"]]
        assert {c.speaker for c in used} == {meta["speaker"]} and meta["accent"] == FSDD_ACCENTS[meta["speaker"]]
        min_gaps = round(0.05 * SAMPLE_RATE) * (len(used) + 1)
        assert len(wave) >= sum(len(clip_wave(c)) for c in used) + min_gaps
        again, text_again, meta_again = connected_digits(train, np.random.default_rng(seed))
        assert torch.equal(again, wave) and (text_again, meta_again) == (text, meta)
    assert len({connected_digits(train, np.random.default_rng(s))[1] for s in range(6)}) > 1


@pytest.mark.parametrize("split, takes", [("test", range(0, 5)), ("train", range(5, 50))])
def test_connected_digits_of_a_split_hold_its_takes_only(clips, split, takes):
    rng = np.random.default_rng(0)
    part = fsdd_split(clips, split)
    used = [stem for _ in range(40) for stem in connected_digits(part, rng, n_digits=(3, 7))[2]["clips"]]
    assert {int(stem.rsplit("_", 1)[1]) for stem in used} <= set(takes)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_comes_at_the_asked_snr(clips, snr):
    train = fsdd_split(clips, "train")
    clean, _, _ = connected_digits(train, np.random.default_rng(7), n_digits=(4, 4))
    noisy, text, meta = connected_digits(train, np.random.default_rng(7), n_digits=(4, 4), noise_snr_db=(snr, snr))
    assert meta["snr_db"] == snr and meta["noise"] in ("white", "pink")
    scale = float(noisy.double() @ clean.double() / (clean.double() @ clean.double()))  # < 1 if it was brought down
    noise = noisy.double() / scale - clean.double()
    measured = 10 * np.log10(float(clean.double().pow(2).sum() / noise.pow(2).sum()))
    assert abs(measured - snr) < 1.0
    for color in ("white", "pink"):
        out = add_noise(clean, np.random.default_rng(1), snr, color)
        scale = float(out.double() @ clean.double() / (clean.double() @ clean.double()))
        noise = out.double() / scale - clean.double()
        assert abs(10 * np.log10(float(clean.double().pow(2).sum() / noise.pow(2).sum())) - snr) < 1.0


def test_pink_noise_has_more_low_than_high_frequencies():
    x = add_noise(_tone(1.0), np.random.default_rng(0), -20.0, "pink").numpy()  # the noise dominates
    power = np.abs(np.fft.rfft(x)) ** 2
    hz = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    low, high = power[(hz > 50) & (hz < 400)].mean(), power[(hz > 4000) & (hz < 7000)].mean()
    assert low > 10 * high


# ------------------------------------------------------------------------------------------------ commands
def test_the_grammar_has_about_200_words_and_held_out_templates():
    assert 180 <= len(commands.vocabulary()) <= 230
    train, test = set(commands.TRAIN_TEMPLATES), set(commands.TEST_TEMPLATES)
    assert train and test and not train & test
    assert 0.15 <= len(test) / (len(train) + len(test)) <= 0.3
    slots = set(commands.SLOTS)
    for text in [*train, *test, *(f for fillers in commands.SLOTS.values() for f in fillers)]:
        assert set(re.findall(r"\{(\w+)\}", text)) <= slots, text


def test_sentences_are_plain_words_from_their_split_and_seeded():
    rng = np.random.default_rng(0)
    drawn = {split: [commands.draw_sentence(rng, split) for _ in range(300)] for split in ("train", "test")}
    for split, templates in (("train", commands.TRAIN_TEMPLATES), ("test", commands.TEST_TEMPLATES)):
        assert {t for _, t in drawn[split]} <= set(templates)
        for text, _ in drawn[split]:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
            assert set(text.split()) <= commands.vocabulary(split)
    assert not {s for s, _ in drawn["train"]} & {s for s, _ in drawn["test"]}
    a, b = commands.sentences(np.random.default_rng(3), 5, "train"), commands.sentences(np.random.default_rng(3), 5,
                                                                                         "train")
    assert a == b and len(set(a)) > 1
    assert commands.number_words(45) == "forty five" and commands.number_words(70) == "seventy"


def test_test_voices_are_held_out():
    assert not set(commands.TRAIN_VOICES) & set(commands.TEST_VOICES)

    def parts(voices):
        return {v.split("+")[0] for v in voices}, {v.split("+")[1] for v in voices if "+" in v}

    (train_accents, train_variants), (test_accents, test_variants) = parts(commands.TRAIN_VOICES), \
        parts(commands.TEST_VOICES)
    assert test_variants and not test_variants & train_variants
    assert test_accents - train_accents  # at least one accent never heard in training
    draws = {commands.draw_voice(np.random.default_rng(s), "test")["voice"] for s in range(50)}
    assert draws <= set(commands.TEST_VOICES)


@needs_espeak
def test_every_voice_is_one_espeak_ng_has():
    def listed(kind: str, column: int) -> set[str]:
        out = subprocess.run(["espeak-ng", f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
        return {line.split()[column] for line in out.splitlines()[1:] if line.strip()}

    languages = listed("en", 1)
    variants = {Path(f).name for f in listed("variant", 4)}
    for voice in commands.TRAIN_VOICES + commands.TEST_VOICES:
        language, _, variant = voice.partition("+")
        assert language in languages, voice
        assert not variant or variant in variants, voice


@needs_espeak
def test_espeak_speaks_a_sentence():
    wave = commands.speak("turn the kitchen light off", "en-gb-scotland+m2", rate=170, pitch=40, gap=2)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert len(wave) / SAMPLE_RATE > 0.3 and 0.05 < float(wave.abs().max()) <= 1


def test_a_missing_espeak_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not commands.espeak_available()
    with pytest.raises(QKVError, match=r"^espeak-ng is not installed: apt-get install espeak-ng$"):
        commands.speak("hello")
    with pytest.raises(QKVError, match="espeak-ng is not installed"):
        commands.utterances(np.random.default_rng(0), 2, "train")


def test_a_piped_wav_gets_its_true_sizes():
    """espeak-ng writes to a pipe: its header's sizes are placeholders until they are set from the bytes."""
    pcm = (np.sin(np.arange(2205) / 5) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 22050, 44100, 2, 16)
    piped = b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVE" + fmt + b"data" + struct.pack("<I", 0x7FFFF000) + pcm
    fixed = commands._with_true_sizes(piped)
    assert struct.unpack("<I", fixed[4:8])[0] == len(piped) - 8 and struct.unpack("<I", fixed[40:44])[0] == len(pcm)
    wave, notes = read_wav(fixed, name="piped")
    assert len(wave) == 1600 and not [n for n in notes if "cut short" in n]


# ------------------------------------------------------------------------------------------------ qkv data speech
def _transcripts(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / TRANSCRIPTS_FILE).read_text().splitlines()]


def test_the_cli_writes_connected_digits_that_read_back_the_same_for_a_seed(capsys, tmp_path, fsdd):
    args = ["data", "speech", "fsdd-connected", "--n", "4", "--seed", "3", "--noise-snr", "10,20"]
    rc, out, err = qkv(capsys, *args, tmp_path / "a")
    assert rc == 0, err
    assert re.fullmatch(rf"wrote 4 fsdd-connected items \(train; [\d.]+ s of audio, [\d.]+ h\) to {tmp_path / 'a'}\n",
                        out), out
    items = read_speech_folder(tmp_path / "a")
    assert len(items) == 4 and all(10 <= i.meta["snr_db"] <= 20 and i.speaker in FSDD_ACCENTS for i in items)
    assert all(i.text == " ".join(DIGIT_WORDS[int(d)] for d in i.meta["digits"]) for i in items)
    assert qkv(capsys, *args, tmp_path / "b")[0] == 0
    assert _transcripts(tmp_path / "a") == _transcripts(tmp_path / "b")
    assert all((tmp_path / "a" / i.audio.relative_to(tmp_path / "a")).read_bytes()
               == (tmp_path / "b" / i.audio.relative_to(tmp_path / "a")).read_bytes() for i in items)


def test_the_cli_writes_fsdd_digits_of_the_left_out_speaker(capsys, tmp_path, fsdd):
    rc, out, err = qkv(capsys, "data", "speech", "fsdd-digits", tmp_path / "d", "--split", "test", "--n", "3",
                       "--leave-out", "nicolas", "--noise-snr", "15")
    assert rc == 0, err
    items = read_speech_folder(tmp_path / "d")
    assert len(items) == 3 and {i.speaker for i in items} == {"nicolas"}
    assert all(i.text in DIGIT_WORDS and i.meta["snr_db"] == 15 for i in items)
    assert all(int(i.meta["clip"].rsplit("_", 1)[1]) < 5 for i in items)


@needs_espeak
def test_the_cli_writes_spoken_commands(capsys, tmp_path):
    for out in ("c", "again"):
        rc, _, err = qkv(capsys, "data", "speech", "commands", tmp_path / out, "--split", "test", "--n", "2")
        assert rc == 0, err
    items = read_speech_folder(tmp_path / "c")
    assert len(items) == 2 and all(i.meta["voice"] in commands.TEST_VOICES for i in items)
    assert all(i.meta["template"] in commands.TEST_TEMPLATES for i in items)
    assert _transcripts(tmp_path / "c") == _transcripts(tmp_path / "again")
    assert all(i.audio.read_bytes() == (tmp_path / "again" / i.audio.relative_to(tmp_path / "c")).read_bytes()
               for i in items)  # espeak-ng is deterministic: the same seed, the same audio


@pytest.mark.parametrize("argv, needles", [
    (["fsdd-digits", "{out}", "--leave-out", "zoe"], ["unknown speaker 'zoe'"]),
    (["commands", "{out}", "--leave-out", "theo"], ["--leave-out picks an FSDD speaker"]),
    (["fsdd-connected", "{out}", "--noise-snr", "20,10"], ["--noise-snr takes LO,HI"]),
    (["fsdd-connected", "{out}", "--n", "0"], ["--n must be at least 1"]),
    (["fsdd-connected", "{full}", "--n", "1"], ["already exists and is not empty"]),
], ids=["unknown-speaker", "commands-leave-out", "bad-snr", "bad-n", "full-folder"])
def test_cli_mistakes_are_one_line(capsys, tmp_path, fsdd, argv, needles):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    argv = [a.format(out=tmp_path / "out", full=tmp_path / "full") for a in argv]
    rc, _, err = qkv(capsys, "data", "speech", *argv)
    assert_user_error(rc, err, *needles)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_nothing_is_left_when_the_items_fail_midway(tmp_path):
    def items():
        yield _tone(0.1), "one", {}
        raise QKVError("the source broke")

    with pytest.raises(QKVError, match="the source broke"):
        write_speech_folder(tmp_path / "out", items())
    assert list(tmp_path.iterdir()) == []
