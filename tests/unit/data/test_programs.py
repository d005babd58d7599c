"""The synthetic programs (`qkv.data.programs`): the same seed gives the same problems, the splits keep their
promises (held-out pairs never together in training, k = 4 only in the length split, no evaluation program's code
in training), every reference passes its own hidden tests in the sandbox, and HumanEval's canonical solutions pass
theirs (the control's plumbing)."""

import pytest

from qkv.data.programs import (
    BLOCKS,
    ProgramSpec,
    doctest_tests,
    held_out_pairs,
    humaneval_problems,
    program_splits,
    trim_completion,
)
from qkv.errors import QKVError
from qkv.evaluation.sandbox import run_programs

SPEC = ProgramSpec(train=3000, eval=60, seed=3)


@pytest.fixture(scope="module")
def splits():
    return program_splits(SPEC)


def test_the_same_spec_gives_the_same_problems_and_another_seed_others(splits):
    program_splits.cache_clear()
    again = program_splits(SPEC)
    assert again == splits
    other = program_splits(ProgramSpec(train=3000, eval=60, seed=4))
    assert [p.prompt for p in other["k3"]] != [p.prompt for p in splits["k3"]]


def test_held_out_pairs_are_never_together_in_training(splits):
    held = held_out_pairs(SPEC.held_out_fraction, SPEC.seed)
    assert held
    for p in splits["train"] + splits["val"] + splits["k3"] + splits["length"]:
        names = p.blocks
        pairs = {frozenset((a, b)) for a in names for b in names if a != b}
        assert not pairs & held, (p.task_id, names)
    for p in splits["compositions"]:
        assert p.k == 2 and frozenset(p.blocks) in held
    seen = {b for p in splits["train"] for b in p.blocks}
    assert seen == {b.name for b in BLOCKS}  # every block is trained on, only some pairs are not


def test_lengths_and_no_evaluation_code_in_training(splits):
    assert {p.k for p in splits["train"]} == {1, 2, 3}
    assert {p.k for p in splits["length"]} == {4} and {p.k for p in splits["k3"]} == {3}
    train_code = {p.completion for p in splits["train"]}
    for name in ("val", "compositions", "k3", "length"):
        codes = [p.completion for p in splits[name]]
        assert len(codes) == SPEC.eval and len(set(codes)) == len(codes)
        assert not set(codes) & train_code, name


def test_a_problem_reads_like_humaneval(splits):
    p = splits["compositions"][0]
    assert p.prompt.startswith("def solve(") and p.prompt.count(">>> solve(") == 2 and p.prompt.endswith('"""\n')
    assert p.completion.startswith("    ") and "return" in p.completion.splitlines()[-1]
    assert len(p.tests) == 5 and all(t.startswith("assert solve(") for t in p.tests)
    assert doctest_tests(p.prompt)[0].startswith("assert (solve(")


def test_every_reference_passes_its_hidden_tests_and_its_doctests_in_the_sandbox(splits):
    problems = [p for name in ("compositions", "k3", "length") for p in splits[name][:20]] + list(splits["train"][:20])
    jobs = [(p.program(), p.tests) for p in problems] + [(p.program(), doctest_tests(p.prompt)) for p in problems]
    outcomes = run_programs(jobs)
    assert all(o.status == "passed" for o in outcomes), [o for o in outcomes if o.status != "passed"][:3]
    wrong = run_programs([(p.program("    return None\n"), p.tests) for p in problems[:10]])
    assert all(o.status == "failed" for o in wrong)


def test_humaneval_canonical_solutions_pass_and_a_stub_does_not(shared_data, monkeypatch):
    monkeypatch.setenv("QKV_DATA_DIR", str(shared_data))
    problems = humaneval_problems()
    assert len(problems) == 164 and problems[0].task_id == "HumanEval/0"
    outcomes = run_programs([(p.program(), p.tests) for p in problems])
    assert sum(o.status == "passed" for o in outcomes) == 164
    stub = run_programs([(p.program("    pass\n"), p.tests) for p in problems[:10]])
    assert not any(o.status == "passed" for o in stub)


def test_a_bad_humaneval_file_is_a_one_line_error(tmp_path):
    with pytest.raises(QKVError, match="file not found"):
        humaneval_problems(tmp_path / "none.jsonl.gz")
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(QKVError, match="not a HumanEval"):
        humaneval_problems(bad)


def test_trim_cuts_at_the_next_top_level_statement():
    assert trim_completion("    return x\n\ndef other():\n    pass\n") == "    return x\n\n"
    assert trim_completion("    return x\nprint(solve(1))\n") == "    return x\n"
    assert trim_completion("    return x\n") == "    return x\n"


def test_a_prompt_without_examples_has_no_doctests():
    with pytest.raises(QKVError, match="no examples"):
        doctest_tests('def f(x):\n    """Nothing to run."""\n')
