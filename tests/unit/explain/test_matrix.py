"""Every topic on every run kind, chosen by what the run can do: a topic that applies (`applies`, from TOPICS'
needs) runs and every one of its checks holds (≤ its tolerance); one that does not is a one-line error naming
the capability it needs. The same `applies` lists the topics of the web page (`topics_for`), and the run's
pages follow from the same capabilities (`qkv.server.served.pages_of`). Speech runs are in it twice: with an
attention head (a decoder with cross-attention) and with a CTC head (no decoder: the decoder topics are one-line
errors saying so)."""

import pytest

from qkv.errors import QKVError
from qkv.explain import TOPICS, applies, explain, topics_for
from qkv.tasks import load_run

KINDS = ["lm", "chat", "translate", "caption", "digits", "shapes", "autoencoder", "speech", "ctc", "qa", "summarize"]
INPUT = {"digits": {"prompt": "3"}}  # a class-conditional run's prompt is its label


@pytest.fixture(scope="module")
def runs(tiny_runs, more_runs, ctc_run_dir):
    return {name: load_run(path) for name, path in {**tiny_runs, **more_runs, "ctc": ctc_run_dir}.items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_cell_of_the_matrix(runs, topic, kind):
    run = runs[kind]
    if applies(topic, run):
        e = explain(topic, run, **INPUT.get(kind, {}))
        bad = [c for c in e.checks if not c.ok]
        assert not bad, [(c.what, c.max_abs_diff) for c in bad]
        e.to_json()
    else:
        with pytest.raises(QKVError) as err:
            explain(topic, run)
        message = str(err.value)
        assert message.startswith(f"explain {topic} needs a run that") and "\n" not in message, message


def test_captioning_gets_every_topic_that_applies_to_an_encoder_decoder(runs):
    """The proof on captioning: with no caption-specific branch in explain, a caption run gets the topics of an
    encoder-decoder that reads a source and writes text — all but the token-table topics (its source is an image)
    and the word alignment (its source has no words)."""
    assert topics_for(runs["caption"]) == [
        "tokens", "qkv", "heads", "self-vs-cross", "decoder-only-vs-encoder-decoder", "output", "encoder-states",
        "training-pairs", "parameters", "evaluation"]
    assert topics_for(runs["translate"]) == [t for t in TOPICS if t not in ("audio", "diffusion", "spans")]
    assert topics_for(runs["summarize"]) == topics_for(runs["translate"])
    assert topics_for(runs["qa"]) == [t for t in TOPICS if t not in ("audio", "diffusion")]
    assert topics_for(runs["autoencoder"]) == ["parameters"]
    assert topics_for(runs["shapes"]) == ["tokens", "parameters", "diffusion"]


def test_speech_gets_the_audio_topic_and_ctc_loses_the_decoder_topics(runs):
    """A speech run is an encoder-decoder whose source is a recording: the caption run's topics and the audio one.
    A CTC run has no decoder: of those, the topics that read only the encoder (and tokens, parameters)."""
    assert topics_for(runs["speech"]) == [
        "tokens", "audio", "qkv", "heads", "self-vs-cross", "decoder-only-vs-encoder-decoder", "output",
        "encoder-states", "training-pairs", "parameters", "evaluation"]
    assert topics_for(runs["ctc"]) == ["tokens", "audio", "qkv", "heads", "parameters"]
    assert "audio" not in topics_for(runs["translate"]) and "audio" not in topics_for(runs["caption"])
    for topic in ("self-vs-cross", "output", "encoder-states", "evaluation"):
        with pytest.raises(QKVError, match="decoder that reads the source through cross-attention"):
            explain(topic, runs["ctc"])
    with pytest.raises(QKVError, match=r"^explain audio needs a run that reads recordings \(speech recognition\); "):
        explain("audio", runs["translate"])


def test_the_pages_follow_the_same_capabilities(runs):
    from qkv.server.served import pages_of

    assert {kind: pages_of(runs[kind]) for kind in KINDS} == {
        "lm": ["generate", "attention", "params", "explain"],
        "chat": ["chat", "generate", "attention", "params", "explain"],
        "translate": ["translate", "attention", "params", "explain"],
        "caption": ["caption", "params", "explain"],
        "digits": ["images", "params", "explain"],
        "shapes": ["images", "params", "explain"],
        "autoencoder": ["params", "explain"],
        "speech": ["transcribe", "params", "explain"],
        "ctc": ["transcribe", "params", "explain"],
        "qa": ["translate", "attention", "params", "explain"],
        "summarize": ["translate", "attention", "params", "explain"]}


def test_qkv_explain_run_dir_lists_that_runs_topics(runs, more_runs, capsys):
    """`qkv explain RUN_DIR` (no topic) prints the topics that apply, then the others with what they need."""
    from qkv.cli.main import main

    assert main(["explain", str(more_runs["caption"])]) == 0
    out = capsys.readouterr().out
    shown, _, rest = out.partition("not for this run:")
    listed = [line.split()[0] for line in shown.splitlines()[1:] if line.startswith("  ")]
    assert listed == topics_for(runs["caption"])
    assert "alignment" in rest and "needs a run that reads its source as text" in rest
    assert main(["explain", "no-such-topic-or-dir"]) == 2
    assert "unknown topic 'no-such-topic-or-dir'" in capsys.readouterr().err
