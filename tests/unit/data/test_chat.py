"""Chat data: JSONL/CSV/TSV reading and validation (one-line errors with line numbers), the split by
question, the built-in qa-skills and pydoc-qa generators, encoding to the context, and padded batches."""

import inspect
import json
import re

import pytest
import torch

from qkv.data.chat import (
    ChatBatches,
    ChatDataConfig,
    encode_conversations,
    load_chat_splits,
    read_conversations,
)
from qkv.data.chat_template import add_chat_tokens, chat_tokens
from qkv.data.conversations import split_of, validate_messages
from qkv.data.qa_skills import pydoc_pairs, pydoc_qa, qa_skills
from qkv.errors import QKVError
from qkv.tasks.chat import chat_tokenizer
from qkv.tokenizers import train_char


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return str(path)


# ------------------------------------------------------------------------------------------- reading
def test_read_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, u("Hi"), a("Hello.")]},
        "",  # blank lines are skipped
        {"messages": [u("2+2?"), a("4"), u("And doubled?"), a("8")], "id": 7},  # extra keys ignored
    ])
    convs = read_conversations(path)
    assert [c.messages for c in convs] == [
        [{"role": "system", "content": "Be brief."}, u("Hi"), a("Hello.")],
        [u("2+2?"), a("4"), u("And doubled?"), a("8")],
    ]
    assert convs[1].where == f"{path}:3" and convs[1].key == "2+2?"


def test_malformed_json_line_fails_with_its_line_number(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [u("Hi"), a("Yo")]}, '{"messages": [', "{}"])
    with pytest.raises(QKVError, match=rf"^{re.escape(path)}:2: malformed JSON"):
        read_conversations(path)


@pytest.mark.parametrize("messages, error", [
    ([a("4"), u("2+2?")], r"message 1: roles out of order: got 'assistant', expected 'system' or 'user'"),
    ([u("a"), u("b"), a("c")], r"message 2: roles out of order: got 'user', expected 'assistant'"),
    ([u("a"), a("b"), {"role": "system", "content": "x"}, a("c")], r"message 3: roles out of order"),
    ([u("2+2?"), a("  ")], r"message 2: empty assistant turn"),
    ([u(""), a("4")], r"message 1: empty user turn"),
    ([u("2+2?")], r"the conversation must end with an assistant turn"),
    ([u("2+2?"), a("4<|end|>")], r"message 2 \(assistant\): content contains the template token '<\|end\|>'"),
    ([u("2+2?"), {"role": "bot", "content": "4"}], r"message 2: unknown role 'bot'"),
    ([u("2+2?"), {"role": "assistant", "content": 4}], r"message 2 \(assistant\): content must be a string, got int"),
    ([], r"'messages' must be a non-empty list"),
])
def test_bad_conversations(tmp_path, messages, error):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [u("ok"), a("ok")]}, {"messages": messages}])
    with pytest.raises(QKVError, match=rf"^{re.escape(path)}:2: {error}"):
        read_conversations(path)


def test_jsonl_line_must_be_an_object_with_messages(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [[u("Hi"), a("Yo")]])
    with pytest.raises(QKVError, match=r":1: expected an object"):
        read_conversations(path)


def test_read_csv_and_tsv(tmp_path):
    (tmp_path / "qa.csv").write_text('question,answer\nWhat is 2 + 2?,4\n"Say ""a, b""",a b\n')
    convs = read_conversations(str(tmp_path / "qa.csv"))
    assert [c.messages for c in convs] == [[u("What is 2 + 2?"), a("4")], [u('Say "a, b"'), a("a b")]]
    (tmp_path / "qa.tsv").write_text("What is 2, plus 2?\t4\n")
    assert read_conversations(str(tmp_path / "qa.tsv"))[0].messages == [u("What is 2, plus 2?"), a("4")]


def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "qa.csv").write_text("question,answer\nWhat is 2 + 2?,4\nonly one column\n")
    with pytest.raises(QKVError, match=r"qa.csv:3: expected 2 columns"):
        read_conversations(str(tmp_path / "qa.csv"))
    (tmp_path / "qa.csv").write_text("What is 2 + 2?,4\nWhat is 3 + 3?,\n")
    with pytest.raises(QKVError, match=r"qa.csv:2: message 2: empty assistant turn"):
        read_conversations(str(tmp_path / "qa.csv"))


def test_unknown_source_kind_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in set"):
        ChatDataConfig(source="notes.txt")
    with pytest.raises(QKVError, match="file not found"):
        read_conversations(str(tmp_path / "missing.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(QKVError, match="file is empty"):
        read_conversations(str(tmp_path / "empty.jsonl"))


def test_validate_returns_clean_messages():
    msgs = validate_messages([{"role": "user", "content": "Hi", "name": "x"}, a("Yo")], "here")
    assert msgs == [u("Hi"), a("Yo")]


# ------------------------------------------------------------------------------------------- splits
def test_split_of_is_stable_and_proportional():
    keys = [f"question {i}" for i in range(20000)]
    splits = [split_of(k, 0.1, 0.2) for k in keys]
    assert splits == [split_of(k, 0.1, 0.2) for k in keys]
    assert abs(splits.count("test") / len(keys) - 0.2) < 0.02
    assert abs(splits.count("val") / len(keys) - 0.1) < 0.02
    assert {split_of(k, 0.0, 0.0) for k in keys} == {"train"}


def test_file_source_is_split_by_question(tmp_path):
    lines = [{"messages": [u(f"q{i % 300}"), a(f"a{i}")]} for i in range(1200)]  # every question 4 times
    path = write_jsonl(tmp_path / "c.jsonl", lines)
    splits = load_chat_splits(ChatDataConfig(source=path, val_fraction=0.1, test_fraction=0.1))
    keys = {s: {c.key for c in convs} for s, convs in splits.items()}
    assert keys["train"] and keys["val"] and keys["test"]
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]
    assert sum(map(len, splits.values())) == 1200


def test_separate_val_and_test_files(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [u(f"q{i}"), a("x")]} for i in range(50)])
    other = write_jsonl(tmp_path / "v.jsonl", [{"messages": [u("v"), a("y")]}])
    splits = load_chat_splits(ChatDataConfig(source=path, val_source=other, test_source=other))
    assert len(splits["train"]) == 50 and [c.key for c in splits["val"]] == ["v"] == [c.key for c in splits["test"]]


# ------------------------------------------------------------------------------------------- qa-skills
def _check_answer(question: str, prev: str | None) -> str:
    """An independent solver for qa-skills questions (follow-ups use the previous reference answer)."""
    in_small = {"m": 100, "cm": 10, "km": 1000, "kg": 1000, "L": 1000}  # large unit -> small units in one
    small = {"m": "cm", "cm": "mm", "km": "m", "kg": "g", "L": "mL"}
    if m := re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", question):
        x, y = int(m[1]), int(m[3])
        return str(x + y if m[2] == "+" else x - y)
    if m := re.fullmatch(r"Reverse ([a-z]+)\.", question):
        return m[1][::-1]
    if m := re.fullmatch(r"How many letters in ([a-z]+)\?", question):
        return str(len(m[1]))
    if m := re.fullmatch(r"How many (\w+) in (\d+) (\w+)\?", question):
        to, n, frm = m[1], int(m[2]), m[3]
        if small.get(frm) == to:
            return str(n * in_small[frm])
        assert small[to] == frm and n % in_small[to] == 0, question
        return str(n // in_small[to])
    if question == "And doubled?":
        return str(2 * int(prev))
    if m := re.fullmatch(r"And plus (\d)\?", question):
        return str(int(prev) + int(m[1]))
    if question == "And reversed?":
        return prev[::-1]
    if question == "And in capitals?":
        return prev.upper()
    if question == "And how many letters?":
        return str(len(prev))
    raise AssertionError(f"unknown question {question!r}")


def test_qa_skills_answers_are_correct():
    convs = qa_skills("train", 3000, seed=1)
    n_followups = 0
    for c in convs:
        prev = None
        for q, ans in zip(c.messages[::2], c.messages[1::2], strict=True):
            assert ans["content"] == _check_answer(q["content"], prev), c.messages
            prev = ans["content"]
        n_followups += len(c.messages) // 2 - 1
    assert 0.3 * len(convs) < n_followups < 1.5 * len(convs)  # followup_prob 0.5, 1-2 follow-ups each


def test_qa_skills_is_deterministic_and_seeded():
    first = [c.messages for c in qa_skills("val", 200, seed=3)]
    assert first == [c.messages for c in qa_skills("val", 200, seed=3)]
    assert first != [c.messages for c in qa_skills("val", 200, seed=4)]


def test_qa_skills_subset():
    convs = qa_skills("train", 200, skills=("reverse",), followup_prob=0.0)
    assert all(re.fullmatch(r"Reverse [a-z]+\.", c.key) and len(c.messages) == 2 for c in convs)
    with pytest.raises(QKVError, match="unknown qa-skills skill 'mul'"):
        qa_skills("train", 5, skills=("mul",))
    with pytest.raises(ValueError, match="unknown skill"):
        ChatDataConfig(skills=("mul",))


def test_qa_skills_test_questions_are_unseen():
    train = {c.key for c in qa_skills("train", 20000)}
    test = qa_skills("test", 400)
    val = qa_skills("val", 400)
    test_keys = [c.key for c in test]
    assert len(set(test_keys)) == 400  # distinct
    assert not train & set(test_keys) and not train & {c.key for c in val} and not set(test_keys) & {c.key for c in val}
    patterns = {"add": r"What is \d+ \+ \d+\?", "sub": r"What is \d+ - \d+\?", "reverse": r"Reverse [a-z]+\.",
                "length": r"How many letters in [a-z]+\?", "convert": r"How many \w+ in \d+ \w+\?"}
    kinds = {name for k in test_keys for name, p in patterns.items() if re.fullmatch(p, k)}
    assert kinds == set(patterns)  # every skill is tested


def test_pydoc_qa():
    pairs = dict(pydoc_pairs())
    assert len(pairs) > 300
    assert pairs["json.dumps"] == inspect.getdoc(__import__("json").dumps).splitlines()[0]
    splits = {s: pydoc_qa(s) for s in ("train", "val", "test")}
    names = {s: {c.key for c in convs} for s, convs in splits.items()}
    assert sum(map(len, names.values())) == len(pairs)
    assert not names["train"] & names["test"] and not names["train"] & names["val"]
    c = splits["train"][0]
    assert c.messages[0]["content"] == f"What does {c.key} do?" and c.messages[1]["content"] == pairs[c.key]


# ------------------------------------------------------------------------------------------- encoding
def test_too_long_conversations_error_or_drop(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [u("Hi"), a("Yo")]},
                                              {"messages": [u("Hi " * 20), a("Yo")]}])
    convs = read_conversations(path)
    tok = chat_tokenizer({"train": convs})
    with pytest.raises(QKVError, match=rf"{re.escape(path)}:2: the conversation is 66 tokens, longer than the context"):
        encode_conversations(convs, tok, 32)
    ex = encode_conversations(convs, tok, 32, too_long="drop")
    assert ex.dropped == 1 and len(ex.inputs) == 1 and ex.conversations == convs[:1]
    assert len(encode_conversations(convs, tok, 65).inputs) == 2  # 66 tokens: 65 inputs fit a 65 context


def test_chat_tokenizer_from_scratch():
    convs = qa_skills("train", 50)
    tok = chat_tokenizer({"train": convs})
    ct = chat_tokens(tok)
    assert tok.vocab_size == ct.end + 1  # the template tokens come last
    assert tok.encode("é") == [tok.unk_id]  # a typed character outside the data does not crash a chat
    base = train_char("abc")
    add_chat_tokens(base)
    with pytest.raises(QKVError, match="not in the 3-character vocabulary"):
        encode_conversations(convs, base, 128)


def test_batches_pad_to_the_batch_and_resume_exactly():
    inputs = [[1] * n for n in (3, 9, 4, 7, 5, 8, 2, 6)]
    targets = [[-100] * (n - 1) + [5] for n in (3, 9, 4, 7, 5, 8, 2, 6)]
    data = ChatBatches(inputs, targets, 2, pad_id=0, pool_batches=4, seed=0)
    seen = []
    for _ in range(len(data)):
        b = data.next_batch()
        lengths = (b["idx"] != 0).sum(1)
        assert b["idx"].shape[1] == lengths.max()  # padded to the longest in the batch, not the context
        assert torch.equal(b["mask"].sum(1), lengths)  # the mask marks the real (unpadded) tokens
        assert ((b["targets"] != -100).sum(1) == 1).all()  # padding never gets a target
        seen += lengths.tolist()
        assert lengths.max() - lengths.min() <= 1  # sorted pools put similar lengths together
    assert sorted(seen) == list(range(2, 10))  # one epoch covers every conversation once
    state = data.state_dict()
    after = [data.next_batch()["idx"] for _ in range(5)]
    data.load_state_dict(state)
    assert all(torch.equal(x, data.next_batch()["idx"]) for x in after)
