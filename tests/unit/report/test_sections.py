"""The pieces of a report card that need no trained run: reading metrics.jsonl (a bad line is a one-line error that
names it), telling evaluation records from training steps, finding metric signatures, formatting values."""

import json

import pytest

from qkv.errors import QKVError
from qkv.report.sections import duration, eval_records, evaluations_section, fmt, signatures_in
from qkv.runs import METRICS_FILE, read_metrics

STEP = {"step": 10, "loss": 2.5, "lr": 1e-3, "tokens_per_s": 1000.0, "elapsed_s": 1.0}
EVAL = {"step": 10, "val_loss": 2.4, "val_bleu": 12.5, "elapsed_s": 1.2, "eval_s": 0.2}


def test_read_metrics_reads_every_line_and_skips_blank_ones(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps(STEP) + "\n\n" + json.dumps(EVAL) + "\n", encoding="utf-8")
    assert read_metrics(tmp_path) == [STEP, EVAL]
    assert read_metrics(tmp_path / "nothing") == []


@pytest.mark.parametrize("lines, message", [
    ([json.dumps(STEP), '{"step": 2, "loss"'], "metrics.jsonl:2: not a JSON line"),
    ([json.dumps(STEP), "[1, 2]"], "metrics.jsonl:2: not a JSON object"),
])
def test_a_bad_metrics_line_is_a_one_line_error_naming_it(tmp_path, lines, message):
    (tmp_path / METRICS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(QKVError) as err:
        read_metrics(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_evaluation_records_are_the_lines_with_more_than_a_step():
    assert eval_records([STEP, EVAL, STEP | {"step": 20}]) == [EVAL]


def test_the_evaluation_table_has_every_record_and_column():
    sec = evaluations_section([STEP, EVAL, EVAL | {"step": 20, "val_chrf++": 30.0}])
    table = next(b for b in sec.blocks if hasattr(b, "columns"))
    assert table.columns == ["step", "val_loss", "val_bleu", "val_chrf++", "elapsed_s", "eval_s"]
    assert table.rows == [["10", "2.4", "12.5", "", "1.2", "0.2"], ["20", "2.4", "12.5", "30", "1.2", "0.2"]]


def test_signatures_are_found_at_any_depth():
    result = {"bleu": {"score": 1.0, "signature": "nrefs:1|tok:13a"}, "groups": [
        {"bleu4": {"signature": "nrefs:4"}}], "chrf_signature": "nc:6", "note": "signature"}
    assert signatures_in([result]) == [["bleu", "nrefs:1|tok:13a"], ["groups.bleu4", "nrefs:4"],
                                       ["chrf_signature", "nc:6"]]
    assert signatures_in([STEP, EVAL]) == []


@pytest.mark.parametrize("value, text", [(0.096544, "0.09654"), (139.84, "139.8"), (3, "3"), (True, "true"),
                                         (None, "null"), ([1, 2], "[1, 2]"), ("ddim", "ddim")])
def test_fmt(value, text):
    assert fmt(value) == text


@pytest.mark.parametrize("seconds, text", [(0.94, "0.9 s"), (725, "12 min 5 s"), (3725, "1 h 02 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text
