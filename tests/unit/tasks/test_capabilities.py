"""What a run can do, as it declares it (`qkv.tasks.capabilities`): every run kind offers the calls of each
capability it declares (its written protocol holds), and a call of a capability it lacks is a one-line error
that names the capability (and ``hasattr`` is False), from Python as from the CLI."""

import pytest

from qkv.errors import QKVError
from qkv.tasks import load_run
from qkv.tasks.capabilities import PROTOCOLS, Capability, Unsupported, can

C = Capability
# what each run kind of the tiny fixtures can do
EXPECTED = {
    "lm": {C.CONTINUATION, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "chat": {C.CONTINUATION, C.CHAT, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "translate": {C.SOURCE_TO_TEXT, C.TEXT_SOURCE, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "caption": {C.SOURCE_TO_TEXT, C.TOKENS, C.TRAINING_EXAMPLES},
    "speech": {C.SOURCE_TO_TEXT, C.TOKENS, C.TRAINING_EXAMPLES},
    "qa": {C.SOURCE_TO_TEXT, C.TEXT_SOURCE, C.SPANS, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "summarize": {C.SOURCE_TO_TEXT, C.TEXT_SOURCE, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "code": {C.SOURCE_TO_TEXT, C.TEXT_SOURCE, C.CODE, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "code-gpt": {C.CONTINUATION, C.CODE, C.TOKENS, C.TOKEN_INPUT, C.SELF_ATTENTION, C.TRAINING_EXAMPLES},
    "digits": {C.IMAGES},
    "shapes": {C.IMAGES, C.TOKENS},
    "autoencoder": set(),
}
# one call that only a run with the capability can make
CALL = {C.CONTINUATION: ("token_stream", ("x",)), C.CHAT: ("chat", ()), C.SOURCE_TO_TEXT: ("to_text", (["x"],)),
        C.TEXT_SOURCE: ("alignment_scores", ()), C.IMAGES: ("sample", (1,)), C.TOKENS: ("text_tokenizer", ()),
        C.TOKEN_INPUT: ("text_input", ()), C.SELF_ATTENTION: ("self_attention", ("x",)),
        C.TRAINING_EXAMPLES: ("training_example", ()), C.SPANS: ("spans", (["Where? ; Here."],)),
        C.CODE: ("complete", (["def f(x):\n"],))}


@pytest.fixture(scope="module")
def runs(tiny_runs, more_runs):
    return {name: load_run(path) for name, path in {**tiny_runs, **more_runs}.items()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_run_declares_what_it_can_do_and_offers_its_calls(runs, name):
    run = runs[name]
    assert run.capabilities == EXPECTED[name] | {C.PARAMETERS, C.EVALUATION}
    for capability in run.capabilities:
        assert isinstance(run, PROTOCOLS[capability]), (name, capability)
    assert can(run, *run.capabilities)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_call_it_cannot_make_names_the_capability(runs, name):
    run = runs[name]
    for capability, (method, args) in CALL.items():
        if capability in run.capabilities:
            continue
        with pytest.raises(QKVError) as err:
            getattr(run, method)(*args)
        message = str(err.value)
        assert f"({capability.value})" in message and run.path.name in message and "\n" not in message, message
        assert isinstance(err.value, (Unsupported, QKVError))
        if not hasattr(type(run), method):  # a call the run's class lacks altogether: not an attribute either
            assert not hasattr(run, method)


def test_sampling_settings_are_keywords_on_every_call_that_samples_or_decodes(runs):
    """Users coming from `transformers` write ``run.generate("ROMEO:", max_new_tokens=10)``: it used to fail with
    "got an unexpected keyword argument"."""
    lm, translate, caption, digits = runs["lm"], runs["translate"], runs["caption"], runs["digits"]
    greedy = lm.generate("<", temperature=0, max_new_tokens=5)
    assert greedy == lm.generate("<", lm.sampling(temperature=0, max_new_tokens=5))
    assert len(lm.tokenizer.encode(greedy)) <= 5
    assert "".join(lm.stream("<", temperature=0, max_new_tokens=5)) == greedy
    assert "".join(runs["chat"].chat(temperature=0, max_new_tokens=5).reply("What is 2 + 2?"))
    assert translate.translate(["die eins ."], beam=2)[0] == translate.translate(["die eins ."],
                                                                                 translate.decoding(beam=2))[0]
    image = caption.example_sources(1)[0]
    assert caption.to_text([image], beam=2) == caption.to_text([image], caption.decoding(beam=2))
    assert digits.sample(2, label=1, steps=3).shape[0] == 2
    with pytest.raises(QKVError, match="unknown setting 'sample.nonsense'"):
        lm.generate("<", nonsense=1)
