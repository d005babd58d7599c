"""The speech task's decoding settings: the default length limit (0.5 characters per encoder state + 10) leaves room
for every transcript of FSDD, its connected strings and the espeak-ng commands, and cuts a runaway one far sooner
than the context would; rescoring with the CTC head (``decode.ctc_weight``) is refused where no CTC reading was
trained, and a preset's weight is set to 0, and said, for a run that trains none."""

import pytest
import torch

from qkv.data import commands
from qkv.data.audio import log_mel
from qkv.data.speech import fsdd_clips
from qkv.data.transcribing import SpeechDataConfig, collate, commands_set, connected_set, fsdd_recordings, fsdd_takes
from qkv.errors import QKVError
from qkv.generation.seq2seq import max_lengths
from qkv.models.transcriber import Transcriber
from qkv.tasks import load_run
from qkv.tasks.speech import SpeechDecoding, SpeechRunConfig
from speech_fixtures import fsdd_root


def _room(recordings) -> list[int]:
    """Per recording: the default limit minus the tokens its transcript needs (characters + EOS)."""
    cfg = SpeechRunConfig()
    out = []
    for r in recordings:
        batch = collate([log_mel(r.wave)])
        mask = Transcriber.memory_mask(batch["frames"], batch["mel"].size(-1))  # (1, S)
        limit = max_lengths(mask, cfg.decode.max_len_a, cfg.decode.max_len_b, 10_000)[0]
        out.append(limit - (len(r.text) + 1))
    return out


def test_every_fsdd_clip_and_connected_string_fits_the_limit():
    clips = fsdd_clips(fsdd_root())
    room = _room(fsdd_recordings(clips)) + _room(connected_set(fsdd_takes("test", SpeechDataConfig()), 100,
                                                               SpeechDataConfig(), [0, 1]))
    assert min(room) >= 3, min(room)


@pytest.mark.skipif(not commands.espeak_available(), reason="espeak-ng is not installed (.ci/run installs it)")
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_spoken_command_fits_the_limit(split):
    assert min(_room(commands_set(split, 60, [0, 7]))) >= 5


def test_a_one_second_recording_stops_long_before_the_context():
    cfg = SpeechRunConfig()
    mask = torch.ones(1, 50, dtype=torch.bool)  # 1 s: 50 encoder states
    assert max_lengths(mask, cfg.decode.max_len_a, cfg.decode.max_len_b, cfg.model.max_seq_len) == [35]


def test_rescoring_is_refused_where_no_ctc_reading_was_trained(more_runs, ctc_speech_run):
    run = load_run(more_runs["speech"])  # trained with train.ctc_weight 0.3
    assert run.decoding(ctc_weight=0.3).ctc_weight == 0.3
    run.config.train.ctc_weight = 0.0
    with pytest.raises(QKVError, match="needs a run trained with train.ctc_weight > 0") as e:
        run.decoding(ctc_weight=0.3)
    assert e.value.argument == "ctc_weight"
    ctc = load_run(ctc_speech_run)
    assert ctc.config.decode.ctc_weight == 0.0  # the preset's 0.3, set to 0 when it trained (and said)
    with pytest.raises(QKVError, match="a CTC run decodes by CTC alone"):
        ctc.decoding(ctc_weight=0.3)
    with pytest.raises(QKVError, match="ctc_weight must be in"):
        load_run(more_runs["speech"]).decoding(ctc_weight=1.5)


def test_the_speech_decoding_keeps_translations_checks():
    with pytest.raises(ValueError, match="beam must be >= 1"):
        SpeechDecoding(beam=0)
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        SpeechDecoding(ctc_weight=-0.1)
