"""A conversation: validated messages, where they came from, and which split their question belongs to.

Messages are ``{"role", "content"}`` dicts in the order ``[system?] user assistant (user assistant)*``, with
non-empty user and assistant turns and no template token inside any content (`qkv.data.chat_template`).
Splits are **by question**: `split_of` hashes a conversation's key (its first user message), so every copy of
a question lands in the same split, whatever the order or size of the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from qkv.data.chat_template import check_content
from qkv.errors import QKVError


@dataclass
class Conversation:
    messages: list[dict]  # [{"role": ..., "content": ...}, ...], validated
    where: str  # where it came from, for error messages: "data.jsonl:12", "qa-skills test #3"
    key: str  # what the split is decided by: the first user message (pydoc-qa: the function's name)
    skill: str = ""  # the built-in skills source: which skill it asks (per-skill exact match)


# ------------------------------------------------------------------------------------------- validation
def validate_messages(messages, where: str) -> list[dict]:
    """The messages as clean ``{"role", "content"}`` dicts, or a one-line QKVError naming `where`.

    Valid: ``[system?] user assistant (user assistant)*``, with non-empty user and assistant contents.
    """
    if not isinstance(messages, list) or not messages:
        raise QKVError(f"{where}: 'messages' must be a non-empty list")
    out = []
    expected = ("system", "user")  # roles allowed at this position
    for i, m in enumerate(messages):
        at = f"{where}: message {i + 1}"
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise QKVError(f"{at}: expected an object with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ("system", "user", "assistant"):
            raise QKVError(f"{at}: unknown role {role!r}; valid: system, user, assistant")
        if role not in expected:
            raise QKVError(f"{at}: roles out of order: got {role!r}, expected {' or '.join(map(repr, expected))}")
        check_content(content, f"{at} ({role})")
        if role != "system" and not content.strip():
            raise QKVError(f"{at}: empty {role} turn")
        out.append({"role": role, "content": content})
        expected = ("user",) if role in ("system", "assistant") else ("assistant",)
    if out[-1]["role"] != "assistant":
        raise QKVError(f"{where}: the conversation must end with an assistant turn, not {out[-1]['role']!r}")
    return out


def conversation(messages, where: str, key: str | None = None) -> Conversation:
    """A validated `Conversation`; its key defaults to the first user message."""
    msgs = validate_messages(messages, where)
    first_user = next(m["content"] for m in msgs if m["role"] == "user")
    return Conversation(msgs, where, first_user if key is None else key)



def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" for a question, from a hash of it (stable across runs and machines).

    The hash is mapped to u in [0, 1): u < test_fraction -> test, then the next val_fraction -> val.
    """
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"
