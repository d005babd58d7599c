"""``qkv chat RUN_DIR``: talk to a chat run; ``qkv chat RUN_DIR --prompt "What is 17 + 25?"``: one turn.

Interactive mode reads one message per line from stdin and streams each reply to stdout, keeping the
conversation's history. Commands: ``/reset`` forgets the history, ``/exit`` (or end of input) quits.
When the conversation no longer fits the context, the oldest exchanges are dropped and a note on stderr
says so. With ``--prompt`` it answers that one message and exits (scriptable). Sampling options are those
of ``qkv generate``; the defaults come from the run's [sample] section (greedy unless it says otherwise).
"""

from __future__ import annotations

import sys

from qkv.errors import QKVError
from qkv.generation.inference import QUANTIZE

HELP = "/reset clears the history, /exit quits"


def add_parser(sub, name):
    p = sub.add_parser(name, help="talk to a trained chat run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--system", default=None, help="a system message before the conversation")
    p.add_argument("--max-new-tokens", type=int, default=None, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="int8 weights (CPU; faster decoding), or bf16 weights (CPUs with bf16 units)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the one-token decode step (seconds to a minute up front; eager if it fails)")
    p.add_argument("--device", default="cpu")


def load_session(args):
    """A `ChatSession` on the run, with the command line's sampling options over the run's [sample] ones."""
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.CHAT, "qkv chat")
    sampling = run_.sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             max_new_tokens=args.max_new_tokens, seed=args.seed, system=args.system)
    return run_.chat(sampling, quantize=args.quantize, compile=args.compile)


def _say(session, message: str, prefix: str = "") -> None:
    """Stream one reply to stdout (and a note to stderr if the history had to be trimmed)."""
    pieces = session.reply(message)  # builds the prompt, trimming the history if needed
    if session.last_trimmed:
        print(f"(context full: dropped the {session.last_trimmed} oldest exchange(s) from the history)",
              file=sys.stderr)
    sys.stdout.write(prefix)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def run(args) -> int:
    session = load_session(args)
    if args.prompt is not None:
        if not args.prompt.strip():
            raise QKVError("the prompt is empty")
        _say(session, args.prompt)
        return 0
    tty = sys.stdin.isatty()
    ctx = session.model.config.max_seq_len
    print(f"chatting with {args.run_dir} (context {ctx} tokens); {HELP}", file=sys.stderr)
    while True:
        if tty:
            try:
                line = input("you> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
        else:
            line = sys.stdin.readline()
            if not line:
                return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            session.reset()
            print("(history cleared)", file=sys.stderr)
            continue
        if line.startswith("/"):
            print(f"unknown command {line.split()[0]}; {HELP}", file=sys.stderr)
            continue
        try:
            _say(session, line, prefix="bot> " if tty else "")
        except QKVError as e:  # one bad message (an unknown character, a template token) ends nothing
            print(f"error: {e}", file=sys.stderr)
