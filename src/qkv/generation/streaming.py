"""Token ids in, text out, as they are generated: incremental, UTF-8 safe, with stop strings.

Decoding the whole id list again for every new token (what a plain ``tok.decode(ids)`` loop does) costs
O(n²) over a long generation. `TextStream` instead turns each id into its bytes (`Tokenizer.token_bytes`)
and feeds them to an incremental UTF-8 decoder, which returns only complete characters: a byte-level
token that ends inside a multi-byte character (one of the four bytes of an emoji) yields nothing until
the rest arrives, so half a character is never printed. The pieces joined are exactly
``tokenizer.decode(ids)``.

Stop strings: the text is searched for them only where a new match can start (the last few characters),
and characters that might be the beginning of a stop string are held back until it is clear they are not.
`qkv.generation.lm.TokenStream`, the one loop that `qkv generate`, `qkv chat`, the playground and the training
samples stream through, pushes every drawn token here.

    >>> from qkv.tokenizers import train_char
    >>> tok = train_char("ab.")
    >>> text = TextStream(tok, stop=["."])
    >>> [text.push(i) for i in tok.encode("ab.ab")], text.stopped
    (['a', 'b', '', '', ''], True)
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Push ids one at a time; each push returns the text that is now safe to show ("" if none).

    Work per push is bounded by the token's length and the longest stop string, whatever has come before:
    only the held-back tail (`_pending`) is ever searched or copied.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self.tokenizer, self.stop = tokenizer, list(stop)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._hold = max((len(s) for s in self.stop), default=1) - 1  # characters a stop string may still need
        self._pending = ""  # decoded, not yet shown: at most `_hold` characters between pushes
        self.stopped = False  # a stop string was found: nothing more will be shown

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        return self._advance(self._utf8.decode(self.tokenizer.token_bytes(token_id)), final=False)

    def finish(self) -> str:
        """The rest, once generation has ended (a trailing incomplete character shows as U+FFFD)."""
        if self.stopped:
            return ""
        return self._advance(self._utf8.decode(b"", final=True), final=True)

    def _advance(self, new: str, final: bool) -> str:
        old = len(self._pending)
        self._pending += new
        if self.stop:  # a new match must end in the new text, so it starts at most len(s) - 1 before it
            hits = [self._pending.find(s, max(0, old - len(s) + 1)) for s in self.stop]
            cut = min((h for h in hits if h >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                out, self._pending = self._pending[:cut], ""
                return out
        n = len(self._pending) - (0 if final or not self.stop else self._hold)
        if n <= 0:
            return ""
        out, self._pending = self._pending[:n], self._pending[n:]
        return out
