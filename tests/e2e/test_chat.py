"""Chat end to end through the real CLI, in-process (`qkv.cli.main.main`), on one thread.

What a model *learned* is asserted only as an aggregate with a margin (exact match, answer loss); every
reply `qkv chat` prints is compared exactly with the same greedy (or seeded) decoder run in-process on the
same saved weights, and every prompt it decodes from is recorded and compared with the chat template.

- a tiny model learns six question/answer pairs (`qkv train`, then `qkv eval`, text and --json, --data,
  --max-pairs);
- `qkv chat --prompt` answers one turn (greedy, seeded sampling, --top-p, --system); interactive `qkv chat`
  driven through stdin: history kept across turns, /reset, unknown commands, a bad message that ends nothing,
  /exit, and the note when the history is trimmed;
- fine-tuning from a base GPT run whose tokenizer lacks the chat tokens (they are added, the embedding
  grows, the base run is untouched, the grown model chats); a base tokenizer that cannot encode the data is a
  one-line error;
- exact resume of a chat run (every logged loss and the final weights); the pydoc-qa source; the
  ``answer_only = false`` ablation (loss on every token, val_loss still answer-only); the shipped preset;
- bad input: malformed JSONL (line number), roles out of order, an empty assistant turn, a conversation
  longer than the context (error, or dropped with a count), `qkv chat` on a non-chat run.
"""

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import qkv.generation.chat as session_module
from chat_fixtures import PAIRS, write_pairs, write_toml
from helpers import assert_user_error, metrics, preset, qkv
from qkv.cli.main import main
from qkv.config import from_dict, load_toml
from qkv.data.chat import encode_conversations, read_conversations
from qkv.data.chat_template import chat_tokens, render_text
from qkv.errors import QKVError
from qkv.evaluation.chat import answer_loss, reply_accuracy
from qkv.generation.chat import ChatSession
from qkv.generation.inference import for_decoding
from qkv.generation.sampling import TokenSampling
from qkv.models.io import load_model
from qkv.runs import read_config
from qkv.tasks.chat import ChatRunConfig
from qkv.tokenizers import load_tokenizer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

def write_two_turns(folder: Path) -> Path:
    """Three two-turn conversations made of the learned pairs (a --data file with follow-ups)."""
    path = folder / "two-turns.jsonl"
    path.write_text("".join(json.dumps({"messages": [u(q), a(ans), u(q2), a(ans2)]}) + "\n"
                            for (q, ans), (q2, ans2) in [(PAIRS[2], PAIRS[3]), (PAIRS[1], PAIRS[2]),
                                                         (PAIRS[3], PAIRS[1])]), encoding="utf-8")
    return path


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    """The six pairs, learned in 150 steps (~1.5 s of training on one thread); see
    `test_tiny_run_learns_the_pairs` for the measured loss and exact match."""
    folder = tmp_path_factory.mktemp("chat")
    toml = write_toml(folder, write_pairs(folder))
    run = folder / "run"
    assert main(["train", "--config", str(toml), "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def decoder(learned_run):
    """(model, tokenizer) of the learned run as `qkv chat` decodes it: the saved weights in the decoding layout."""
    model, _ = load_model(learned_run)
    return for_decoding(model), load_tokenizer(learned_run / "tokenizer.json")


def greedy(decoder, *messages: str, max_new_tokens: int = 64, system: str | None = None) -> list[str]:
    """The replies of one in-process greedy `ChatSession` to `messages` in turn ("/reset" resets it)."""
    model, tok = decoder
    session = ChatSession(model, tok, TokenSampling(0.0), max_new_tokens, system=system)
    replies = []
    for m in messages:
        if m == "/reset":
            session.reset()
        else:
            replies.append("".join(session.reply(m)))
    return replies


@pytest.fixture
def prompts(monkeypatch) -> list[str]:
    """The text of every prompt a reply is decoded from while the test runs, in order (the CLI's and ours)."""
    seen: list[str] = []
    real = session_module.reply_stream

    def recording(model, tok, prompt_ids, *args, **kwargs):
        seen.append(tok.decode(list(prompt_ids)))
        return real(model, tok, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(session_module, "reply_stream", recording)
    return seen


# ------------------------------------------------------------------------------------------------ helpers
def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def eval_json(capsys, *argv) -> dict:
    rc, out, err = qkv(capsys, "eval", *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------------ learning
def test_tiny_run_learns_the_pairs(learned_run, capsys):
    """`qkv eval` on the learned run: the six pairs are learned (exact match ≥ 5/6, answer loss < 0.1); the text
    report prints the --json figures; a --data file of two-turn conversations is scored turn by turn."""
    scores = eval_json(capsys, learned_run)
    assert (scores["conversations"], scores["n_single"], scores["n_followup"]) == (6, 6, 0)
    assert scores["answer_tokens"] == sum(len(ans) + 1 for _, ans in PAIRS)  # characters + <|end|>
    # measured 6/6 and 0.0090 on torch 2.13, Intel Xeon (AMX), 1 thread:
    # `pytest tests/e2e/test_chat_e2e.py::test_tiny_run_learns_the_pairs`
    assert scores["em_single"] >= 5 / 6, scores["errors"]
    assert scores["loss"] < 0.1
    rc, out, _ = qkv(capsys, "eval", learned_run)
    m = re.search(r"answer loss ([\d.]+) nats/token.*\n.*single-turn ([\d.]+)% of 6 \| follow-up n/a", out)
    assert rc == 0 and m, out
    assert m[1] == f"{scores['loss']:.4f}" and float(m[2]) == pytest.approx(100 * scores["em_single"], abs=0.05)

    scores = eval_json(capsys, learned_run, "--data", write_two_turns(learned_run.parent))
    assert (scores["conversations"], scores["n_single"], scores["n_followup"]) == (3, 3, 3)
    # measured 3/3 (follow-ups 0/3, never trained on) on torch 2.13, Intel Xeon (AMX), 1 thread (same command)
    assert scores["em_single"] >= 2 / 3, scores["errors"]
    saved = read_config(learned_run)
    assert saved["task"] == "chat" and saved["train"]["answer_only"] is True


def test_eval_max_pairs_scores_the_first_conversations(learned_run, capsys):
    """`qkv eval --max-pairs N` on a chat run scores the first N conversations: loss and exact match equal the
    in-process figures on those N; N above the count changes nothing; with --data both turns of each count;
    N = 0 is a one-line error."""
    full = eval_json(capsys, learned_run)
    two = eval_json(capsys, learned_run, "--max-pairs", 2)
    assert (two["conversations"], two["em_conversations"], two["n_single"]) == (2, 2, 2)
    assert two["answer_tokens"] == len("Paris") + 1 + len("blue") + 1
    model, _ = load_model(learned_run)
    tok = load_tokenizer(learned_run / "tokenizer.json")
    first = read_conversations(str(learned_run.parent / "pairs.csv"))[:2]
    assert two["loss"] == answer_loss(model, encode_conversations(first, tok, 64), chat_tokens(tok).end)[0]
    assert two["em_single"] == reply_accuracy(model, tok, first)["single"]  # same weights, same greedy decoder
    assert eval_json(capsys, learned_run, "--max-pairs", 100) == full
    one = eval_json(capsys, learned_run, "--data", write_two_turns(learned_run.parent), "--max-pairs", 1)
    assert (one["conversations"], one["n_single"], one["n_followup"]) == (1, 1, 1)
    rc, _, err = qkv(capsys, "eval", learned_run, "--max-pairs", 0)
    assert_user_error(rc, err, "max_pairs must be positive, got 0")


def test_chat_prompt_round_trip(learned_run, decoder, capsys):
    """`qkv chat --prompt` prints exactly the in-process greedy reply on the saved weights, then a newline;
    --temperature/--top-k/--seed give the in-process sampled reply with that seed; --top-p 1e-6 keeps only
    the argmax, so even at temperature 100 the reply is the greedy one."""
    for q, _ in PAIRS:
        rc, out, err = qkv(capsys, "chat", learned_run, "--prompt", q)
        assert rc == 0, err
        assert out == greedy(decoder, q)[0] + "\n"
    sampled = ["chat", learned_run, "--prompt", "What is 2 + 2?", "--temperature", "1.5", "--top-k", "20",
               "--seed", "1", "--max-new-tokens", "3"]
    rc, out, err = qkv(capsys, *sampled)
    assert rc == 0, err
    model, tok = decoder
    want = "".join(ChatSession(model, tok, TokenSampling(1.5, 20), 3, seed=1).reply("What is 2 + 2?"))
    assert out == want + "\n" and len(tok.encode(want)) <= 3
    assert qkv(capsys, *sampled)[1] == out  # the same seed samples the same reply

    hot = ["chat", learned_run, "--prompt", "Who wrote Hamlet?", "--temperature", "100", "--seed", "3"]
    rc, out, err = qkv(capsys, *hot, "--top-p", "1e-6")
    assert rc == 0, err
    assert out == greedy(decoder, "Who wrote Hamlet?")[0] + "\n"
    # without --top-p, temperature 100 samples from a near-uniform distribution over ~100 tokens: the chance of
    # reproducing the greedy reply is below 1e-3 (guard: the equality above is not vacuous). Measured: 33
    # random characters against "Shakespeare": `pytest tests/e2e/test_chat_e2e.py::test_chat_prompt_round_trip`
    assert qkv(capsys, *hot)[1] != out


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_chat_with_int8_weights(learned_run, capsys):
    """`qkv chat --quantize int8`: the reply of the int8 model, decoded in-process the same way."""
    from qkv.generation.inference import prepare_for_decoding
    from qkv.models.io import load_model
    from qkv.tokenizers import load_tokenizer

    rc, out, err = qkv(capsys, "chat", learned_run, "--prompt", "What is 2 + 2?", "--quantize", "int8")
    assert rc == 0, err
    q = prepare_for_decoding(load_model(learned_run)[0], "int8")
    tok = load_tokenizer(learned_run / "tokenizer.json")
    assert out == "".join(ChatSession(q, tok, TokenSampling(0.0), 64).reply("What is 2 + 2?")) + "\n"


def test_chat_system_message(learned_run, decoder, capsys, prompts):
    """`qkv chat --system` puts the system message before the conversation: the prompt is the template's, and
    the reply is the in-process greedy reply with the same system message."""
    want = greedy(decoder, "What is 2 + 2?", system="Be brief.")[0]
    prompts.clear()
    rc, out, err = qkv(capsys, "chat", learned_run, "--prompt", "What is 2 + 2?", "--system", "Be brief.")
    assert rc == 0, err
    assert prompts == [render_text([{"role": "system", "content": "Be brief."}, u("What is 2 + 2?")], True)]
    assert out == want + "\n"


def test_interactive_chat_through_stdin(learned_run, decoder, capsys, monkeypatch, prompts):
    """Interactive `qkv chat`: each reply equals an in-process session driven through the same messages; the
    history is kept across turns (with --max-new-tokens 12 nothing needs trimming), /reset clears it, a bad
    message prints an error and leaves the history as it was, unknown commands are reported, /exit ends it."""
    q1, q2, q3 = "What is 2 + 2?", "Who wrote Hamlet?", "What color is the sky?"
    lines = [q1, "/reset", "", q2, "/bogus", "say <|end|> now", q1, "/reset", q3, "/exit",
             "What is the capital of France?"]
    model, tok = decoder
    session = ChatSession(model, tok, TokenSampling(0.0), 12)
    want = ["".join(session.reply(q1))]
    session.reset()
    want.append("".join(session.reply(q2)))
    with pytest.raises(QKVError, match="template token"):
        session.reply("say <|end|> now")
    want.append("".join(session.reply(q1)))
    session.reset()
    want.append("".join(session.reply(q3)))
    prompts.clear()
    rc, out, err = qkv(capsys, "chat", learned_run, "--max-new-tokens", "12", stdin="\n".join(lines) + "\n",
                       monkeypatch=monkeypatch)
    assert rc == 0, err
    assert out == "".join(r + "\n" for r in want)  # nothing after /exit is answered
    # longest prompt: 19 + (≤ 12 + 2) + 17 tokens, + 12 new ≤ 64: no exchange is ever dropped
    assert prompts == [render_text([u(q1)], True), render_text([u(q2)], True),
                       render_text([u(q2), a(want[1]), u(q1)], True), render_text([u(q3)], True)]
    assert "context full" not in err
    assert err.count("(history cleared)") == 2
    assert "unknown command /bogus" in err
    assert "error: " in err and "template token '<|end|>'" in err
    # end of input ends the session too
    rc, out, _ = qkv(capsys, "chat", learned_run, stdin=f"{q2}\n", monkeypatch=monkeypatch)
    assert rc == 0 and out == greedy(decoder, q2)[0] + "\n"


def test_interactive_chat_trims_the_history_and_says_so(learned_run, decoder, capsys, monkeypatch, prompts):
    """When the history no longer fits, the oldest exchange is dropped with a note: the second prompt is the
    bare second message, so the reply equals a fresh session's."""
    # context 64: a 33-token prompt + 30 new tokens fits alone, not after an exchange of history
    first, second = "What is the capital of France?", "Who wrote Hamlet?"
    want = [greedy(decoder, q, max_new_tokens=30)[0] for q in (first, second)]  # each from a fresh session
    prompts.clear()
    rc, out, err = qkv(capsys, "chat", learned_run, "--max-new-tokens", "30", stdin=f"{first}\n{second}\n",
                       monkeypatch=monkeypatch)
    assert rc == 0, err
    assert "dropped the 1 oldest exchange(s)" in err
    assert prompts == [render_text([u(first)], True), render_text([u(second)], True)]
    assert out == want[0] + "\n" + want[1] + "\n"


# ------------------------------------------------------------------------------------------------ fine-tuning
def _base_run(folder: Path, text: str, capsys) -> Path:
    """A tiny character GPT (lm task) trained for a few steps on `text`."""
    corpus = folder / "corpus.txt"
    corpus.write_text(text * 40, encoding="utf-8")
    base = folder / "base"
    rc, _, err = qkv(capsys, "train", "--config", preset("shakespeare-char-cpu"), "--out", base,
                     "--data", corpus, "--no-sample", "--model.max_seq_len", "64", "--model.d_model", "32",
                     "--model.n_layers", "1", "--model.n_heads", "2", "--train.max_steps", "4",
                     "--train.batch_size", "4", "--train.eval_interval", "4", "--train.eval_iters", "1",
                     "--train.threads", "1", "--train.progress", "false", "--train.device", "cpu")
    assert rc == 0, err
    return base


def test_init_from_a_base_run_without_chat_tokens(tmp_path, capsys):
    """--init-from a GPT run without chat tokens: the tokens are appended, the embedding grows, the base run is
    untouched, and `qkv chat` on the result prints the in-process greedy reply of the saved weights."""
    text = "".join(f"{q} {ans}\n" for q, ans in PAIRS)
    base = _base_run(tmp_path, text, capsys)
    before = tree_hash(base)
    base_tok = load_tokenizer(base / "tokenizer.json")
    V = read_config(base)["model"]["vocab_size"]
    assert V == base_tok.vocab_size and base_tok.token_to_id("<|end|>") is None
    toml = write_toml(tmp_path, write_pairs(tmp_path), steps=6, eval_interval=6)
    rc, out, err = qkv(capsys, "train", "--config", toml, "--out", tmp_path / "chat", "--init-from", base,
                       "--no-sample")
    assert rc == 0, err
    assert "had no chat tokens: added <|system|>, <|user|>, <|assistant|>, <|end|>" in err
    assert f"grew the token embedding (tied with lm_head: True) from {V} to {V + 4} rows" in err
    assert tree_hash(base) == before  # the base run is untouched
    tok = load_tokenizer(tmp_path / "chat" / "tokenizer.json")
    assert [tok.id_to_token(i) for i in range(V)] == [base_tok.id_to_token(i) for i in range(V)]
    assert tok.token_to_id("<|end|>") == V + 3
    saved = read_config(tmp_path / "chat")
    assert saved["model"]["vocab_size"] == V + 4 and saved["model"]["d_model"] == 32  # the base's shape
    assert saved["data_meta"]["init_from"] == str(base)
    # the grown model chats: `qkv chat` prints the in-process greedy reply on the saved weights
    rc, out, err = qkv(capsys, "chat", tmp_path / "chat", "--prompt", "Who wrote Hamlet?", "--max-new-tokens", "5")
    assert rc == 0, err
    model, _ = load_model(tmp_path / "chat")
    assert model.tok_emb.weight.shape[0] == V + 4
    session = ChatSession(for_decoding(model), tok, TokenSampling(0.0), 5)
    assert out == "".join(session.reply("Who wrote Hamlet?")) + "\n"


def test_init_from_a_base_tokenizer_that_cannot_encode_the_data(tmp_path, capsys):
    base = _base_run(tmp_path, "only lower case letters and spaces here\n", capsys)
    toml = write_toml(tmp_path, write_pairs(tmp_path), steps=6, eval_interval=6)
    rc, _, err = qkv(capsys, "train", "--config", toml, "--out", tmp_path / "chat", "--init-from", base)
    assert_user_error(rc, err, "pairs.csv:2", "is not in the", f"with the tokenizer of {base}")
    assert not (tmp_path / "chat").exists()


# ------------------------------------------------------------------------------------------------ resume
def test_resume_reproduces_the_continuous_run(tmp_path, capsys):
    """10 steps + --resume to 20 = 20 steps straight: every logged loss and validation figure, and the final
    weights, are identical; the second half did train (weights moved, loss fell)."""
    toml = write_toml(tmp_path, write_pairs(tmp_path), steps=20, eval_interval=10)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert qkv(capsys, "train", "--config", toml, "--out", straight, "--no-sample")[0] == 0
    assert qkv(capsys, "train", "--config", toml, "--out", resumed, "--no-sample", "--train.max_steps", "10",
               "--train.decay_steps", "20")[0] == 0
    half = load_file(resumed / "model.safetensors")
    rc, _, err = qkv(capsys, "train", "--resume", resumed, "--train.max_steps", "20", "--no-sample")
    assert rc == 0, err

    def logged(run, key):
        return {r["step"]: r[key] for r in metrics(run) if key in r}

    straight_losses = logged(straight, "loss")
    assert sorted(straight_losses) == [5, 10, 15, 20]
    assert logged(resumed, "loss") == straight_losses
    assert sorted(logged(straight, "val_loss")) == [10, 20]
    assert logged(resumed, "val_loss") == logged(straight, "val_loss")
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert wa.keys() == wb.keys() == half.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after resume"
    assert any(not torch.equal(wb[k], half[k]) for k in wb), "the resumed steps changed no weight"
    # measured: loss 3.968 at step 5, 1.839 at step 20 on torch 2.13, Intel Xeon (AMX), 1 thread:
    # `pytest tests/e2e/test_chat_e2e.py::test_resume_reproduces_the_continuous_run`
    assert straight_losses[20] < straight_losses[5] - 0.5


def test_pydoc_qa_trains(tmp_path, capsys):
    """The pydoc-qa source through `qkv train`: the split loses no function; the test exact match `qkv train`
    prints is the one `qkv eval` reports for the saved run, and `qkv eval`'s loss is the logged val_loss."""
    from qkv.data.qa_skills import pydoc_pairs

    toml = write_toml(tmp_path, tmp_path / "unused.jsonl", steps=2, eval_interval=2)
    run = tmp_path / "run"
    rc, out, err = qkv(capsys, "train", "--config", toml, "--out", run, "--data", "pydoc-qa",
                       "--data.val_source", "none", "--data.test_source", "none", "--data.em_conversations", "5",
                       "--model.max_seq_len", "128", "--no-sample")
    assert rc == 0, err
    meta = read_config(run)["data_meta"]
    n = {s: meta[f"{s}_conversations"] for s in ("train", "val", "test")}
    assert min(n.values()) > 0, n
    assert sum(n.values()) == len(pydoc_pairs())  # too_long = "error": nothing was dropped either
    m = re.search(r"test exact match \((\d+) unseen conversations, greedy\): single ([\d.]+)%", out)
    assert m, out
    res = eval_json(capsys, run)
    assert int(m[1]) == res["n_single"] == res["em_conversations"] == n["test"] and res["n_followup"] == 0
    assert float(m[2]) == pytest.approx(100 * res["em_single"], abs=0.05)
    assert res["conversations"] == n["val"]
    last = [r for r in metrics(run) if "val_loss" in r][-1]
    assert last["step"] == 2 and "val_em_single" in last
    assert res["loss"] == last["val_loss"]  # the saved weights on the same validation split


def test_answer_only_false_ablation(tmp_path, learned_run, capsys):
    """The ablation through `qkv train --train.answer_only false`: every target carries loss (the first
    step's loss is the all-token loss of the initial model), while val_loss stays answer-only."""
    pairs = write_pairs(tmp_path)
    toml = write_toml(tmp_path, pairs, steps=2, eval_interval=2)
    run = tmp_path / "run"
    rc, _, err = qkv(capsys, "train", "--config", toml, "--out", run, "--no-sample", "--train.answer_only", "false",
                     "--train.log_interval", "1")
    assert rc == 0, err
    saved = read_config(run)
    assert saved["train"]["answer_only"] is False
    meta, answer_only_meta = saved["data_meta"], read_config(learned_run)["data_meta"]
    assert meta["train_tokens"] == answer_only_meta["train_tokens"]
    assert meta["train_answer_tokens"] == meta["train_tokens"]  # every target counted
    assert answer_only_meta["train_answer_tokens"] == sum(len(ans) + 1 for _, ans in PAIRS)

    tok = load_tokenizer(run / "tokenizer.json")
    pad = chat_tokens(tok).end
    convs = read_conversations(str(pairs))
    answers, every = encode_conversations(convs, tok, 64), encode_conversations(convs, tok, 64, answer_only=False)
    # step 1: the initial model (seeded as the recipe seeds it) on one batch of all six conversations
    from qkv.models.gpt import GPT, GPTConfig

    torch.manual_seed(1337)
    initial = GPT(from_dict(GPTConfig, saved["model"]))
    step1 = metrics(run)[0]
    assert step1["step"] == 1
    # measured 4.6853123 logged vs 4.6853125 (the batch sums in another order) on torch 2.13, Intel Xeon (AMX),
    # 1 thread: `pytest tests/e2e/test_chat_e2e.py::test_answer_only_false_ablation`
    assert step1["loss"] == pytest.approx(answer_loss(initial, every, pad)[0], rel=1e-5)
    # the answer-only loss of the same model is another number: measured 4.760, 0.074 away (same command)
    assert abs(answer_loss(initial, answers, pad)[0] - step1["loss"]) > 0.01

    model, _ = load_model(run)
    last = [r for r in metrics(run) if "val_loss" in r][-1]
    assert last["val_loss"] == answer_loss(model, answers, pad)[0]  # val split = pairs.csv, answer-only
    # ... and not the all-token loss: measured 4.570 answer-only vs 4.439 all-token (same command)
    assert abs(answer_loss(model, every, pad)[0] - last["val_loss"]) > 0.01


# ------------------------------------------------------------------------------------------------ presets
def test_the_preset_parses():
    cfg = from_dict(ChatRunConfig, load_toml(preset("chat-qa-skills")))
    assert cfg.task == "chat" and cfg.data.source == "qa-skills" and cfg.train.answer_only


# ------------------------------------------------------------------------------------------------ bad input
def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps({"messages": r})) + "\n" for r in rows))
    return path


GOOD = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("rows, needles", [
    ([GOOD, '{"messages": [{"role": "user"', GOOD], ["data.jsonl:2: malformed JSON"]),
    ([GOOD, GOOD, GOOD[::-1]], ["data.jsonl:3: message 1: roles out of order"]),
    ([GOOD, [GOOD[0], {"role": "assistant", "content": ""}]], ["data.jsonl:2: message 2: empty assistant turn"]),
    ([GOOD, [GOOD[0], {"role": "assistant", "content": "x" * 80}]],
     ["data.jsonl:2: the conversation is 98 tokens, longer than the context", 'data.too_long = "drop"']),
])
def test_bad_chat_data_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, rows, needles):
    data = _jsonl(tmp_path / "data.jsonl", rows)
    toml = write_toml(tmp_path, data, steps=2, eval_interval=2)
    rc, _, err = qkv(capsys, "train", "--config", toml, "--out", tmp_path / "run")
    assert_user_error(rc, err, *needles)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def dropped_run(tmp_path_factory):
    """(run, data file, stderr of `qkv train`): 2 steps on 3 conversations, one longer than the context, with
    data.too_long = "drop"."""
    folder = tmp_path_factory.mktemp("dropped")
    long = [GOOD[0], {"role": "assistant", "content": "x" * 80}]
    data = _jsonl(folder / "data.jsonl", [GOOD, long, GOOD])
    toml = write_toml(folder, data, steps=2, eval_interval=2)
    capture = io.StringIO()
    with contextlib.redirect_stderr(capture):  # capsys is per test; this fixture is per module
        rc = main(["train", "--config", str(toml), "--out", str(folder / "run"), "--no-sample",
                   "--data.too_long", "drop"])
    assert rc == 0, capture.getvalue()
    return folder / "run", data, capture.getvalue()


def test_too_long_conversations_can_be_dropped(dropped_run):
    """data.too_long = "drop" leaves the long conversation out of training and says how many."""
    run, _, err = dropped_run
    assert "dropped 1 training conversation(s) longer than the context (64 tokens)" in err
    assert read_config(run)["data_meta"]["train_conversations"] == 2


def test_eval_with_data_counts_each_dropped_conversation_once(dropped_run, capsys):
    """`qkv eval --data FILE` scores loss and exact match on the same conversations: one conversation too long
    for the context is one left out, not one per figure."""
    run, data, _ = dropped_run
    res = eval_json(capsys, run, "--data", data)
    assert (res["conversations"], res["em_conversations"]) == (2, 2)
    assert res["dropped"] == 1


def test_chat_on_a_non_chat_run(tmp_path, capsys):
    base = _base_run(tmp_path, "What is 2 + 2? 4\n", capsys)
    rc, _, err = qkv(capsys, "chat", base, "--prompt", "hi")
    assert_user_error(rc, err, "qkv chat needs a run that chats", "is an lm run")
    # a run saved as a chat run whose tokenizer lost its template tokens
    import json as _json

    from qkv.runs import CONFIG_FILE

    cfg = _json.loads((base / CONFIG_FILE).read_text())
    (base / CONFIG_FILE).write_text(_json.dumps({"task": "chat", "model_type": "gpt", "model": cfg["model"]}))
    rc, _, err = qkv(capsys, "chat", base, "--prompt", "hi")
    assert_user_error(rc, err, "is not a chat run: its tokenizer has no chat template tokens")
    rc, _, err = qkv(capsys, "chat", tmp_path / "missing", "--prompt", "hi")
    assert_user_error(rc, err, "run directory not found")
