"""A small conversation and tokenizers with the chat template's tokens, and the tiny chat run's pairs and config,
shared by the chat tests (tests/e2e/test_chat.py) and the server's (tests/serve_fixtures.py)."""

from pathlib import Path

from qkv.data.chat_template import add_chat_tokens
from qkv.tokenizers import train_bpe, train_char

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 17 + 25?"},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "And doubled?"},
    {"role": "assistant", "content": "84"},
]
TEXT = "".join(m["content"] for m in CONV) + "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ?.!0123456789"


def char_tok():
    tok = train_char(TEXT)
    add_chat_tokens(tok)
    return tok


def bpe_tok():
    tok = train_bpe([TEXT] * 20, vocab_size=300)
    add_chat_tokens(tok)
    return tok


# the tiny chat run: six question/answer pairs, learned in 150 steps (tests/e2e/test_chat.py measures it)
PAIRS = [
    ("What is the capital of France?", "Paris"),
    ("What color is the sky?", "blue"),
    ("What is 2 + 2?", "4"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("What is the opposite of hot?", "cold"),
    ("How many legs does a spider have?", "8"),
]

TINY = """\
task = "chat"

[data]
source = "{data}"
val_source = "{data}"
test_source = "{data}"

[model]
max_seq_len = 64
d_model = 64
n_layers = 2
n_heads = 4
bias = false

[train]
max_steps = {steps}
batch_size = 6
lr = 3e-3
min_lr = 3e-4
warmup_steps = 10
eval_interval = {eval_interval}
log_interval = 5
seed = 1337
device = "cpu"
threads = 1
progress = false
"""


def write_pairs(folder: Path) -> Path:
    path = folder / "pairs.csv"
    path.write_text("question,answer\n" + "".join(f"{q},{a}\n" for q, a in PAIRS), encoding="utf-8")
    return path


def write_toml(folder: Path, data: Path, steps: int = 150, eval_interval: int = 150) -> Path:
    path = folder / "tiny-chat.toml"
    path.write_text(TINY.format(data=data, steps=steps, eval_interval=eval_interval), encoding="utf-8")
    return path
