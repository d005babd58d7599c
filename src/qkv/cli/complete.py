"""``qkv complete RUN_DIR [--prompt FILE] [--n N] [--temperature T] [--no-test]``: write a function's body from its
signature and docstring with a code run, then run it in the sandbox against the docstring's examples.

The prompt is the whole file (stdin when none is given), as HumanEval gives it: ``def f(...):`` and its docstring.
Greedy by default; ``--n 5 --temperature 0.8`` draws five completions. Each completion is printed after the prompt,
then, unless ``--no-test``, each ``>>> call`` / result pair of the docstring is run as a test in a separate,
time- and memory-limited Python process (`qkv.evaluation.sandbox`), never in this one, and its verdict printed.
"""

from __future__ import annotations

import sys


def add_parser(sub, name):
    p = sub.add_parser(name, help="complete a function from its docstring with a code run, and test it",
                       description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--prompt", metavar="FILE", help="the function's signature and docstring (default: stdin)")
    p.add_argument("--n", type=int, default=1, help="completions to draw (default 1: greedy)")
    p.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default: greedy "
                                                                   "for one, the run's for several)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-test", dest="test", action="store_false", help="print the completions only")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.data.files import decode_text, read_text
    from qkv.data.programs import doctest_tests
    from qkv.evaluation.sandbox import run_programs
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.CODE, "qkv complete")
    prompt = read_text(args.prompt) if args.prompt else decode_text(sys.stdin.buffer.read(), "stdin")
    tests = doctest_tests(prompt) if args.test else []  # no examples: a one-line error before any decoding
    completions = run_.complete([prompt], n=args.n, temperature=args.temperature, seed=args.seed)[0]
    outcomes = run_programs([(prompt + c, [t]) for c in completions for t in tests]) if tests else []
    for i, c in enumerate(completions):
        if len(completions) > 1:
            print(f"# --- completion {i + 1} of {len(completions)}")
        print(prompt + c, end="" if c.endswith("\n") else "\n")
        mine = outcomes[i * len(tests):(i + 1) * len(tests)]
        for t, o in zip(tests, mine, strict=True):
            print(f"# {'pass' if o.status == 'passed' else 'FAIL'}: {t}" + ("" if o.status == "passed" else
                                                                          f"  ({o.status}: {o.detail})"))
        if tests:
            print(f"# {sum(o.status == 'passed' for o in mine)} of {len(tests)} examples pass")
    return 0
