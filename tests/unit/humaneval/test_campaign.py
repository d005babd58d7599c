"""Planning a campaign (`qkv.humaneval.campaign`) without any run: every rater rates every item once, ⌈10%⌉
controls each with one BAD copy of the right candidate, shuffled tasks and display orders, all seeded; and
reading the items: empty lines skipped with their references, mismatched files refused."""

import math
from types import SimpleNamespace

import pytest

from qkv.errors import QKVError
from qkv.humaneval.campaign import CampaignSpec, n_controls, plan_campaign, read_items, sample_items, system_labels
from qkv.tasks.capabilities import Capability

# a run that writes text about a sentence, as far as reading items asks (what it can do)
TEXT_RUN = SimpleNamespace(capabilities={Capability.SOURCE_TO_TEXT}, source_kind="text")


def plan(n_items=30, systems=("a", "b"), raters=3, seed=0):
    items = [(i, f"source {i}", f"reference {i}") for i in range(n_items)]
    outputs = [[f"{s} output number {i} reads like this" for i in range(n_items)] for s in systems]
    tokens = iter(f"token{k:020d}" for k in range(100))
    return plan_campaign("c", "source-to-text", {}, [(s, s) for s in systems], items, outputs, raters, seed,
                         tokens=lambda: next(tokens))


def shape(p):
    """Everything but the tokens: what the seed decides."""
    return [[(t.item, tuple(t.candidates), t.control) for t in r.tasks] for r in p.raters], \
        [(c.item, c.system, c.text, c.bad_of) for c in p.candidates]


@pytest.mark.parametrize("systems", [("a",), ("a", "b")])
def test_every_rater_rates_every_item_once_plus_controls(systems):
    p = plan(n_items=30, systems=systems)
    k = math.ceil(0.1 * 30)
    assert [r.name for r in p.raters] == ["rater1", "rater2", "rater3"]
    for r in p.raters:
        regular = [t for t in r.tasks if not t.control]
        controls = [t for t in r.tasks if t.control]
        assert sorted(t.item for t in regular) == list(range(30)) and len(controls) == k
        assert all(len(t.candidates) == len(systems) for t in r.tasks)
        for t in regular:
            assert sorted(p.candidates[c].system for c in t.candidates) == list(range(len(systems)))
            assert all(p.candidates[c].bad_of is None and p.candidates[c].item == t.item for c in t.candidates)
        for t in controls:
            bad = [p.candidates[c] for c in t.candidates if p.candidates[c].bad_of is not None]
            assert len(bad) == 1  # one degraded candidate; the other system's stays
            original = p.candidates[bad[0].bad_of]
            assert (original.item, original.system) == (t.item, bad[0].system) and bad[0].text != original.text
            assert sorted(p.candidates[c].system for c in t.candidates) == list(range(len(systems)))


def test_controls_are_at_least_one_and_about_ten_percent():
    assert [n_controls(n) for n in (1, 5, 10, 11, 100, 101)] == [1, 1, 1, 2, 10, 11]
    assert sum(t.control for t in plan(n_items=1, raters=1).raters[0].tasks) == 1


def test_the_plan_is_seeded_and_raters_differ():
    assert shape(plan(seed=5)) == shape(plan(seed=5))
    assert shape(plan(seed=5)) != shape(plan(seed=6))
    orders = [[t.item for t in r.tasks] for r in plan().raters]
    assert orders[0] != orders[1] != orders[2]
    assert orders[0] != sorted(orders[0])  # shuffled, not in item order
    controlled = [sorted(t.item for t in r.tasks if t.control) for r in plan().raters]
    assert len({tuple(c) for c in controlled}) > 1  # the controlled items are chosen per rater


def test_display_order_is_random_per_task():
    p = plan(n_items=40)
    firsts = [p.candidates[t.candidates[0]].system for r in p.raters for t in r.tasks]
    assert 0.3 < sum(firsts) / len(firsts) < 0.7  # system b shown first about half the time


def test_tokens_are_unguessable_by_default():
    items = [(0, "s", None)]
    p = plan_campaign("c", "continuation", {}, [("a", "a")], items, [["out put"]], 3, 0)
    tokens = [r.token for r in p.raters]
    assert len(set(tokens)) == 3 and all(len(t) == 24 for t in tokens)  # 18 random bytes, base64url


def test_labels_are_run_names_made_unique(tmp_path):
    assert system_labels([tmp_path / "x" / "run", tmp_path / "y" / "run"]) == ["run", "run-2"]
    assert system_labels([tmp_path / "base", tmp_path / "big"]) == ["base", "big"]


def test_sampling_is_seeded_and_keeps_the_data_order():
    items = list(range(100))
    picked = sample_items(items, 10, seed=1)
    assert picked == sorted(picked) and len(set(picked)) == 10 and picked == sample_items(items, 10, seed=1)
    assert picked != sample_items(items, 10, seed=2)
    assert sample_items(items, 500, seed=1) == items


def test_empty_lines_are_skipped_with_their_references(tmp_path):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("eins\n\nzwei\n  \ndrei\n", encoding="utf-8")
    ref.write_text("one\nlost\ntwo\nlost too\n\n", encoding="utf-8")
    items, where = read_items(CampaignSpec("c", ["r"], src=src, ref=ref), TEXT_RUN)
    assert items == [(0, "eins", "one"), (2, "zwei", "two"), (4, "drei", None)]
    assert where == f"{src} -> {ref}"


def test_mismatched_files_name_both_counts(tmp_path):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    ref.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(QKVError, match="has 3 lines but .* has 2"):
        read_items(CampaignSpec("c", ["r"], src=src, ref=ref), TEXT_RUN)


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "a b"}, "campaign name"), ({"name": "../x"}, "campaign name"), ({"runs": []}, "1 or 2 runs"),
    ({"runs": ["a", "b", "c"]}, "1 or 2 runs"), ({"n": 0}, "^n must be positive"),
    ({"raters": -1}, "^raters must be positive"), ({"src": None}, "give the items with"),
    ({"data": "multi30k"}, "not both"), ({"split": "val"}, "split goes with data = .multi30k."),
    ({"src": None, "data": "validation", "split": "val"}, "split goes with a named dataset, not with data = "
                                                         "'validation'"),
    ({"src": None, "data": "validation", "ref": "r.txt"}, "ref goes with a src file"),
])
def test_spec_checks(changes, message):
    spec = CampaignSpec(**({"name": "ok", "runs": ["a"], "src": "s.txt"} | changes))
    with pytest.raises(QKVError, match=message):
        spec.check()
