"""The chat template: conversations <-> token ids, with the mask of the tokens that carry loss.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``. Each
message becomes its role token, its content and an end-of-turn token; nothing else (no newlines, no BOS)::

    <|system|>Be brief.<|end|><|user|>What is 17 + 25?<|end|><|assistant|>42<|end|><|user|>And doubled?<|end|>
    <|assistant|>84<|end|>

(one line; wrapped here). Generation starts after a trailing ``<|assistant|>`` (`render(...,
add_generation_prompt=True)`) and stops at ``<|end|>``. Training and inference call the same `render`, so a
prompt at inference is token for token the prefix the model saw in training.

Every segment is encoded on its own — ``encode(content)`` between special ids, never ``encode`` of the whole
rendered string — so a BPE merge can never cross a turn boundary, and text that merely *contains*
``"<|end|>"`` is refused (`check_content`) instead of silently becoming a special token.

Loss mask: True on the content tokens of assistant messages and on their ``<|end|>`` (the model must learn
to stop); False on system and user turns and on the role tokens. Example, character tokenizer::

    ids   <|user|>  H   i  <|end|> <|assistant|>  y   o  <|end|>
    mask     0      0   0     0         0         1   1     1

Training predicts ``ids[1:]`` from ``ids[:-1]``; a target whose mask is 0 becomes -100 (`targets_from`).

**The calculator tool** (nanochat's GSM8K stage; `qkv.generation.calculator`). A tokenizer given the tool tokens
(``add_chat_tokens(tok, tools=True)``) reads a call written in an assistant's content in GSM8K's notation,
``<<expression=result>>``, as the tool's three tokens; the model writes the call and the expression, the tool
writes the result, so the result and the closing token carry no loss::

    content   <<37+45=82>>82
    ids       <|calc|>  37  +  45  <|result|>  82  <|/calc|>  82  <|end|>
    mask         1       1  1   1      1        0      0       1     1

A tokenizer without the tool tokens (every chat run before them) encodes the same content as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from qkv.errors import QKVError

ROLES = ("system", "user", "assistant")
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [SYSTEM, USER, ASSISTANT, END]  # added in this order: ids vocab_size .. vocab_size + 3
ROLE_TOKEN = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
IGNORE = -100  # the target value the loss skips
CALC, RESULT, CALC_END = "<|calc|>", "<|result|>", "<|/calc|>"
TOOL_TOKENS = [CALC, RESULT, CALC_END]  # added after SPECIAL_TOKENS, only with tools=True
TOOL_CALL = re.compile(r"<<([^<>=]*)=([^<>]*)>>")  # a calculator call in content: <<expression=result>>


@dataclass(frozen=True)
class ChatTokens:
    """Ids of the template's special tokens in one tokenizer."""

    system: int
    user: int
    assistant: int
    end: int

    def role(self, role: str) -> int:
        return getattr(self, role)


@dataclass(frozen=True)
class ToolTokens:
    """Ids of the calculator's tokens in one tokenizer: the call opens, the result follows, the call closes."""

    calc: int
    result: int
    end: int


def add_chat_tokens(tok, tools: bool = False) -> list[str]:
    """Give `tok` the template's special tokens, and the calculator's with `tools` (appended: existing ids
    unchanged). Returns the ones added."""
    missing = [t for t in SPECIAL_TOKENS + (TOOL_TOKENS if tools else []) if tok.token_to_id(t) is None]
    tok.add_special_tokens(missing)
    return missing


def tool_tokens(tok) -> ToolTokens | None:
    """The calculator's token ids of `tok`, or None if it has none (no tool: calls are plain text)."""
    ids = [tok.token_to_id(t) for t in TOOL_TOKENS]
    return None if None in ids else ToolTokens(*ids)


def uses_tools(messages: Sequence[dict]) -> bool:
    """Whether an assistant turn of `messages` calls the calculator."""
    return any(m["role"] == "assistant" and TOOL_CALL.search(m["content"]) for m in messages)


def encode_assistant(content: str, tok, tools: ToolTokens | None) -> tuple[list[int], list[bool]]:
    """An assistant's content -> (ids, loss mask), its calculator calls as tool tokens (module docstring).

    Example: ``<<2+3=5>>5`` -> [calc, "2", "+", "3", result, "5", end-of-call, "5"], mask [1, 1, 1, 1, 1, 0, 0, 1].
    """
    if tools is None:
        body = tok.encode(content)
        return body, [True] * len(body)
    ids: list[int] = []
    mask: list[bool] = []
    at = 0
    for call in TOOL_CALL.finditer(content):
        before, expr, result = tok.encode(content[at:call.start()]), tok.encode(call[1]), tok.encode(call[2])
        ids += [*before, tools.calc, *expr, tools.result, *result, tools.end]
        mask += [True] * (len(before) + 1 + len(expr) + 1) + [False] * (len(result) + 1)
        at = call.end()
    rest = tok.encode(content[at:])
    return ids + rest, mask + [True] * len(rest)


def tool_text(ids: Sequence[int], tok) -> str:
    """Ids -> text, the calculator's tokens written back as ``<<``, ``=``, ``>>`` (the content form)."""
    tools = tool_tokens(tok)
    if tools is None:
        return tok.decode(list(ids))
    marks = {tools.calc: "<<", tools.result: "=", tools.end: ">>"}
    out, run = [], []
    for i in ids:
        if i in marks:
            out += [tok.decode(run), marks[i]]
            run = []
        else:
            run.append(i)
    return "".join(out) + tok.decode(run)


def final_answer(reply: str) -> str:
    """What a reply answers: its text without calculator calls, after its last ``": "`` (a reply may show its
    working first), stripped. Example: ``"k-o-w reversed is w-o-k: wok"`` -> ``"wok"``; ``"<<2+3=5>>5"`` -> "5"."""
    text = TOOL_CALL.sub("", reply)
    return text.rpartition(": ")[2].strip()


def chat_tokens(tok) -> ChatTokens:
    """The template token ids of `tok`, or QKVError naming the missing ones (not a chat tokenizer)."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise QKVError(f"the tokenizer has no chat template tokens ({', '.join(missing)}); "
                       "is this a chat run? (train one with task = \"chat\")")
    return ChatTokens(*(ids[t] for t in SPECIAL_TOKENS))


def check_content(text: str, where: str = "message") -> None:
    """QKVError if `text` is not a string or contains a template token (it would forge a turn boundary)."""
    if not isinstance(text, str):
        raise QKVError(f"{where}: content must be a string, got {type(text).__name__}")
    for t in SPECIAL_TOKENS + TOOL_TOKENS:
        if t in text:
            raise QKVError(f"{where}: content contains the template token {t!r}")


def render(
    messages: Sequence[dict], tok, add_generation_prompt: bool = False
) -> tuple[list[int], list[bool]]:
    """Messages -> (token ids, loss mask), per the module docstring.

    add_generation_prompt: append ``<|assistant|>`` so the model's next tokens are the reply.
    """
    ct, tools = chat_tokens(tok), tool_tokens(tok)
    ids: list[int] = []
    mask: list[bool] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise QKVError(f"message {i + 1}: unknown role {role!r}; valid: {', '.join(ROLES)}")
        content = m.get("content")
        check_content(content, f"message {i + 1} ({role})")
        if role == "assistant":
            body, learn = encode_assistant(content, tok, tools)
        else:
            body = tok.encode(content)
            learn = [False] * len(body)
        ids += [ct.role(role), *body, ct.end]
        mask += [False, *learn, role == "assistant"]
    if add_generation_prompt:
        ids.append(ct.assistant)
        mask.append(False)
    return ids, mask


def render_text(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The rendered conversation as a string: what ``tok.decode(render(messages, tok)[0])`` gives."""
    out = "".join(ROLE_TOKEN[m["role"]] + m["content"] + END for m in messages)
    return out + (ASSISTANT if add_generation_prompt else "")


def parse(text: str) -> list[dict]:
    """Inverse of `render_text` for a complete conversation: ``parse(render_text(m)) == m``.

    Example: ``parse("<|user|>Hi<|end|><|assistant|>Yo<|end|>")`` ->
    ``[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]``.
    """
    by_token = {v: k for k, v in ROLE_TOKEN.items()}
    out: list[dict] = []
    rest = text
    while rest:
        role = next((by_token[t] for t in by_token if rest.startswith(t)), None)
        if role is None:
            raise QKVError(f"expected a role token at {rest[:20]!r}")
        rest = rest[len(ROLE_TOKEN[role]) :]
        end = rest.find(END)
        if end < 0:
            raise QKVError(f"{role} turn without {END}")
        out.append({"role": role, "content": rest[:end]})
        rest = rest[end + len(END) :]
    return out


def targets_from(ids: Sequence[int], mask: Sequence[bool], answer_only: bool = True) -> tuple[list[int], list[int]]:
    """(inputs, targets) for next-token training: inputs ``ids[:-1]``, targets ``ids[1:]`` with -100 where
    the mask is False (or nowhere, with ``answer_only=False``: loss on every token, the ablation).

    Example: ids [u, H, e, a, y, e], mask [0, 0, 0, 0, 1, 1] -> inputs [u, H, e, a, y],
    targets [-100, -100, -100, y, e].
    """
    if len(ids) != len(mask):
        raise ValueError(f"{len(ids)} ids but {len(mask)} mask entries")
    targets = [t if (m or not answer_only) else IGNORE for t, m in zip(ids[1:], mask[1:], strict=True)]
    return list(ids[:-1]), targets
