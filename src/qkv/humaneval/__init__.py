"""Human evaluation: people score what two trained runs (or one) produce, and statistics say what it means.

The protocol follows WMT's human evaluation as run in Appraise: Direct Assessment on a 0–100 scale (Graham et
al. 2013, "Continuous measurement scales in human evaluation of machine translation") with Error Span
Annotation (Kocmi et al. 2024, "Error Span Annotation: a balanced approach for human evaluation of machine
translation"): a rater marks minor and major error spans in a candidate, then scores it.

    qkv human-eval create demo --runs runs/a runs/b --data multi30k --n 100 --raters 3
    qkv serve --db human-eval.db                        # the raters open their private links
    qkv human-eval report demo                          # means, CIs, z-scores, tests, agreement, QC, plot
    qkv human-eval export demo --out results/           # every judgement, history included (CSV, JSONL)

- a **campaign** (`qkv.humaneval.campaign`): n items sampled from the data, each system's candidate for each
  item, K raters who each rate every item, plus ~10% quality-control tasks in which one candidate is replaced
  by a BAD copy (`qkv.humaneval.quality`); tasks shuffled, two systems shown in a random order (slot A / B);
- a **judgement** (`qkv.humaneval.judgement`): per candidate, accuracy and fluency on 0–100 and optional error
  spans (minor / major); with two systems also a preference (A, B or tie);
- the **store** (`qkv.humaneval.store`): one SQLite file, safe for a threaded web server, judgements
  append-only (a changed score is a new row, the latest counts, the history is kept);
- the **statistics** (`qkv.humaneval.stats`): raw and per-rater z-score means with bootstrap CIs, Wilcoxon
  signed-rank between two systems, preferences, Krippendorff's α, Kendall τ against chrF++ and BLEU, ESA error
  counts, and per-rater quality control (Appraise's one-sided Mann-Whitney U on BAD copies vs originals);
- the **report** (`qkv.humaneval.report`): a JSON-ready dict, its text, a PNG, and the export.
"""

from qkv.humaneval.campaign import CampaignSpec, Created, create_campaign, plan_campaign
from qkv.humaneval.quality import degrade, phrase_length
from qkv.humaneval.report import build_report, export_judgements, format_report, plot_report, render_plot
from qkv.humaneval.stats import Rating
from qkv.humaneval.store import CampaignPlan, InvalidJudgement, NotFound, Rater, Store

__all__ = ["CampaignPlan", "CampaignSpec", "Created", "InvalidJudgement", "NotFound", "Rater", "Rating", "Store",
           "build_report", "create_campaign", "degrade", "export_judgements", "format_report", "phrase_length",
           "plan_campaign", "plot_report", "render_plot"]
