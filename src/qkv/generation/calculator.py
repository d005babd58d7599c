"""The calculator tool: the model writes an expression, qkv computes it, the reply goes on from the result.

nanochat's GSM8K stage gives its model a Python tool; qkv's chat pipeline gives a calculator (Schick et al. 2023,
"Toolformer", is the idea; GSM8K's ``<<48/2=24>>`` annotations are the notation). In tokens
(`qkv.data.chat_template`)::

    model writes   <|calc|> 37 + 45 <|result|>
    tool writes                                 82 <|/calc|>            (forced: the model is not asked)
    model writes                                             82 <|end|>

Decoding (`ChatCompleter`, through `GPTCompleter`'s loop, and `ToolStream`) watches each row: when the model emits
``<|result|>``, the expression since the last ``<|calc|>`` is computed (`calculate`) and the result's tokens and
``<|/calc|>`` are fed to the model one per step, as if it had drawn them; they are marked `forced`, so REINFORCE
gives them no gradient.

`calculate` never calls ``eval``: it parses the expression with `ast` and computes only integers and decimals
with ``+ - * / // %``, unary minus and parentheses, within size limits. Anything else gives ``"error"`` (the model
sees that and goes on): names, calls, attributes, powers, strings, an expression over 64 characters, a number
over 12 digits, division by zero.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Iterator, Sequence
from fractions import Fraction

from qkv.data.chat_template import chat_tokens, render, tool_text, tool_tokens
from qkv.generation.completion import GPTCompleter
from qkv.generation.lm import Piece, TokenStream

MAX_EXPRESSION = 64  # characters
MAX_DIGITS = 12  # of any number, given or computed
ERROR = "error"
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _value(node: ast.AST) -> Fraction:
    """An expression node's exact value; ValueError for anything but numbers, the operators and unary ±."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = Fraction(str(node.value))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
    elif isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise ValueError("division by zero")
        value = Fraction(OPERATORS[type(node.op)](left, right))
    else:
        raise ValueError(f"not allowed: {type(node).__name__}")
    if abs(value) >= 10**MAX_DIGITS:
        raise ValueError("too large")
    return value


def calculate(expression: str) -> str:
    """The value of an arithmetic expression as text, or ``"error"``.

    Examples: ``"37+45"`` -> ``"82"``; ``"7 * (3 - 5)"`` -> ``"-14"``; ``"10/4"`` -> ``"2.5"``; ``"1/3"`` ->
    ``"0.333333"`` (six decimals at most); ``"__import__('os')"`` -> ``"error"``; ``"2**99"`` -> ``"error"``."""
    if len(expression) > MAX_EXPRESSION:
        return ERROR
    try:
        value = _value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, RecursionError):
        return ERROR
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def tool_result(ids: Sequence[int], tok) -> list[int]:
    """What the tool writes after a row's ids end with ``<|result|>``: the result's ids and ``<|/calc|>``."""
    tools = tool_tokens(tok)
    start = max((i for i, t in enumerate(ids) if t == tools.calc), default=None)
    expression = tok.decode(list(ids[start + 1 : -1])) if start is not None else ""
    return [*tok.encode(calculate(expression)), tools.end]


class ChatCompleter(GPTCompleter):
    """A user message -> the chat model's reply, calling the calculator where the model asks for it.

    A prompt is a user message (a string) or a whole conversation ending with a user turn (a list of messages);
    it is rendered with the chat template. The reply ends at ``<|end|>`` or any role token. Samples' texts are in
    the content form (``<<37+45=82>>82``)."""

    def __init__(self, model, tokenizer):
        ct = chat_tokens(tokenizer)
        super().__init__(model, tokenizer, ct.end)
        self.stops = {ct.end, ct.user, ct.assistant, ct.system}
        self.tools = tool_tokens(tokenizer)

    def prompt_ids(self, prompt, room: int) -> list[int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        ids, _ = render(messages, self.tok, add_generation_prompt=True)
        return ids[-max(1, self.model.config.max_seq_len - room):]

    def tool_ids(self, ids: list[int]) -> list[int]:
        """After ``<|result|>``: the calculator's result and ``<|/calc|>`` (`tool_result`)."""
        if self.tools is not None and ids[-1] == self.tools.result:
            return tool_result(ids, self.tok)
        return []

    def text(self, ids: list[int]) -> str:
        """The reply in the content form: ``<<37+45=82>>82``."""
        return tool_text(ids[:-1] if ids and ids[-1] in self.stops else ids, self.tok)

    def replies(self, prompts: Sequence, max_new_tokens: int) -> list[str]:
        """The greedy reply to each prompt, in the content form."""
        return [s.text for s in self.greedy(prompts, max_new_tokens)]


class ToolStream:
    """A streamed chat reply that calls the calculator: `TokenStream`'s interface (iterate for `Piece`s; then
    `reason`, `tokens`, `prompt_cut`, `prompt_ids`), made of one `TokenStream` per stretch the model writes.

    A stretch ends at ``<|calc|>`` (shown as ``<<``) or ``<|result|>``; after ``<|result|>`` the tool's tokens are
    shown (``=82>>``) and the next stretch starts from everything so far (its prompt read again: a reply calls
    the tool once or twice, so re-reading is cheaper than it sounds and keeps `TokenStream` the only loop)."""

    def __init__(self, model, tok, prompt_ids: Sequence[int], max_new_tokens: int, sampling, generator,
                 stop_ids: Sequence[int], top: int = 0):
        self.model, self.tok, self.prompt_ids, self.max_new_tokens = model, tok, list(prompt_ids), max_new_tokens
        self.sampling, self.generator, self.stop_ids, self.top = sampling, generator, tuple(stop_ids), top
        self.tools = tool_tokens(tok)
        self.prompt_cut = max(0, len(self.prompt_ids) - model.config.max_seq_len)
        self.reason, self.tokens = "length", 0

    def __iter__(self) -> Iterator[Piece]:
        ids: list[int] = []  # the reply so far, tool tokens included
        marks = {self.tools.calc: "<<", self.tools.result: "="}
        ctx = self.model.config.max_seq_len
        while self.tokens < self.max_new_tokens and len(self.prompt_ids) + len(ids) < ctx:
            room = min(self.max_new_tokens - self.tokens, ctx - len(self.prompt_ids) - len(ids))
            stream = TokenStream(self.model, self.tok, self.prompt_ids + ids, room,
                                 self.sampling, generator=self.generator, top=self.top,
                                 stop_ids=self.stop_ids + tuple(marks))
            for piece in stream:
                if piece.id is not None:
                    ids.append(piece.id)
                yield piece
            self.tokens += stream.tokens
            self.reason = stream.reason
            if stream.stop_id not in marks:
                return
            ids.append(stream.stop_id)
            yield Piece(stream.stop_id, marks[stream.stop_id])
            if stream.stop_id == self.tools.result:
                result = tool_result(ids, self.tok)
                ids += result
                self.tokens += len(result)
                yield Piece(None, self.tok.decode(result[:-1]) + ">>")
        self.reason = "length"

    def texts(self) -> Iterator[str]:
        return (p.text for p in self if p.text)
