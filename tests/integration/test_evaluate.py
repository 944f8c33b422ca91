"""`prelabel evaluate`, `compare` and `report` end to end through the real SDKs against the fake providers.

The fake annotator writes a fuller summary when the prompt carries the better template's instruction, and the
fake judge rates fuller summaries higher (and short summaries of long dialogues low), so the right ranking,
the right worst slice and a significant paired difference are known in advance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support
from typer.testing import CliRunner

from prelabel import metrics
from prelabel.evaluation.calibration import judge_calibration
from prelabel.evaluation.results import ItemResult
from prelabel.evaluation.reviews import reviewed_from_corrections
from prelabel.evaluation.runs import load_items, load_run
from prelabel.judge import LEVELS
from prelabel.prompts import PROMPTS_DIR, PromptSet
from prelabel.records import ReviewedTask
from prelabel.scripts import evaluate as evaluate_command
from prelabel.testing import FakeRequest
from tests.conftest import DATA, DIALOGSUM, ROOT, ScriptedLLM, section

MARKER = "Name every speaker, every decision and every time or place mentioned."

AMAZON = DATA / "sentiment" / "amazon.jsonl"
LONG_DIALOGUE = 700  # characters; the baseline prompt's summaries of longer dialogues are rated "bad"


class QualityLLM(ScriptedLLM):
    """ScriptedLLM whose summaries depend on the prompt: with MARKER, the first and the last turn."""

    def __call__(self, request: FakeRequest) -> Any:
        schema = request.wants_json_schema or (request.tool.input_schema if request.tool else None)
        if self.is_judge(request) or (schema and "label" in schema.get("properties", {})):
            return super().__call__(request)
        prompt = request.prompt_text
        turns = [line.split(":", 1)[-1].strip() for line in section(prompt, "Conversation").splitlines()]
        if MARKER in prompt:
            return f"Detailed summary: {turns[0]} Then: {turns[-1]}"
        return f"Summary: {turns[0]}"


def rate(conversation: str, label: str) -> int:
    if label.startswith("Detailed"):
        return 4 if len(conversation) < 1200 else 3
    return LEVELS.index("bad") if len(conversation) > LONG_DIALOGUE else LEVELS.index("good")


@pytest.fixture
def llm() -> QualityLLM:
    scripted = QualityLLM()
    scripted.rate = rate
    return scripted


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="evaluate")(evaluate_command.evaluate)
    app.command(name="compare")(evaluate_command.compare)
    app.command(name="report")(evaluate_command.report)
    return app


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli(), [str(a) for a in args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


@pytest.fixture
def templates(tmp_path: Path) -> tuple[Path, Path]:
    base = (PROMPTS_DIR / "summarize.txt").read_text(encoding="utf-8")
    v1 = tmp_path / "v1.txt"
    v1.write_text(base, encoding="utf-8")
    v2 = tmp_path / "v2.txt"
    v2.write_text(base.replace("Conversation:", f"{MARKER}\nConversation:"), encoding="utf-8")
    return v1, v2


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_compare_report_on_dialogsum(make_settings, provider, templates, tmp_path):
    make_settings(PRELABEL_CONCURRENCY="8")
    v1, v2 = templates
    out, eval_set = tmp_path / "run", tmp_path / "eval_set.jsonl"
    common = [
        "--label-config",
        ROOT / "label_config" / "summarization.xml",
        "--eval-set",
        eval_set,
        "--size",
        "60",
        "--seed",
        "0",
        "--out",
        out,
        "--reference-field",
        "summary",
        "--slice-field",
        "topic",
    ]

    invoke("evaluate", DIALOGSUM, "--prompt", f"v1={v1}", *common)
    lines = eval_set.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 60
    drawn = [json.loads(line)["source_id"] for line in lines]
    assert len(set(drawn)) == 60 and all(sid.startswith("dev_") for sid in drawn)
    first_sha = sha(eval_set)

    # A later run with another prompt version (and another seed, which must not matter) reuses the set verbatim.
    invoke(
        "evaluate",
        DIALOGSUM,
        "--prompt",
        f"v2={v2}",
        *common[:-8],
        "--seed",
        "7",
        "--out",
        out,
        "--reference-field",
        "summary",
        "--slice-field",
        "topic",
    )
    assert sha(eval_set) == first_sha
    run = load_run(out)
    assert list(run.versions) == ["v1", "v2"] and run.eval_set_sha256 == first_sha
    items = {name: load_items(out, name) for name in run.versions}
    for name in run.versions:
        assert [item.source_id for item in items[name]] == drawn
        assert all(item.error is None and item.level is not None for item in items[name])
    assert all(item.label.startswith("Detailed") for item in items["v2"])
    assert all(item.label.startswith("Summary:") for item in items["v1"])

    # The summary's numbers are backend.metrics on the saved items.
    for name, summary in run.versions.items():
        check_summary_matches_items(summary, items[name])
        assert summary.model_version.startswith(f"{name}@") and "gpt-4o-mini+claude-haiku-4-5" in summary.model_version
        roles = {usage.role: usage for usage in summary.usage}
        assert roles["annotator"].calls == 60 and roles["judge"].calls == 60
        assert roles["annotator"].input_tokens > 0 and summary.cost_usd is not None and summary.cost_usd > 0

    # Ranking: v2 first, in summary.json, the HTML and the Markdown.
    assert [v.name for v in run.ranking()] == ["v2", "v1"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Best version: <b>v2</b>" in html
    assert "**Best version: v2**" in (out / "report.md").read_text(encoding="utf-8")
    assert "string-matching" in html.lower() or "String-matching" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

    # compare: the paired difference is positive and its interval excludes 0.
    invoke("compare", out, "--base", "v1", "--candidate", "v2", "--movers", "5")
    comparisons = json.loads((out / "comparisons.json").read_text(encoding="utf-8"))
    assert len(comparisons) == 1
    c = comparisons[0]
    a = [float(i.level) for i in items["v1"]]
    b = [float(i.level) for i in items["v2"]]
    ci = metrics.paired_bootstrap_ci(a, b)
    assert c["n_paired"] == 60 and c["mean_difference"] == pytest.approx(ci.mean_difference)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert c["ci_low"] > 0 and c["verdict"] == "v2 is better"
    assert c["share_good_base"] == pytest.approx(sum(x >= 3 for x in a) / 60)
    assert c["share_good_candidate"] == pytest.approx(1.0)
    assert len(c["movers"]) == 5 and all(m["delta"] == 3 for m in c["movers"])  # bad -> excellent moved most

    # Subset analysis: the baseline's worst slice is the longest dialogues.
    from prelabel.evaluation.slices import slice_run

    slices = slice_run(out, ["topic"])
    worst = slices["v1"].worst[0]
    assert worst.feature in ("chars", "words", "turns")
    chars = slices["v1"].features["chars"]
    assert chars[-1].mean_level == min(s.mean_level for s in chars)  # the top length bucket is the weakest
    long_items = [i for i in items["v1"] if i.features["chars"] > LONG_DIALOGUE]
    assert all(i.level == 1 for i in long_items) and long_items
    assert "topic" in slices["v1"].features
    assert 'class="worst-slices"' in html


def check_summary_matches_items(summary, items: list[ItemResult]) -> None:
    levels = [i.level for i in items if i.level is not None]
    assert summary.n_items == len(items) == 60
    assert summary.distribution == metrics.level_distribution(levels)
    assert summary.mean_level == pytest.approx(metrics.mean(levels))
    assert summary.share_good == pytest.approx(sum(level >= 3 for level in levels) / len(levels))
    assert summary.n_unrated == 0 and summary.unrated_reasons == {}
    labels = [i.label for i in items]
    references = [i.reference for i in items]
    assert all(r for r in references)
    text = summary.text_metrics
    assert text.n == 60
    assert text.rouge1 == pytest.approx(metrics.mean([metrics.rouge_n(c, r, 1).f1 for c, r in zip(labels, references)]))
    assert text.rouge2 == pytest.approx(metrics.mean([metrics.rouge_n(c, r, 2).f1 for c, r in zip(labels, references)]))
    assert text.rougeL == pytest.approx(metrics.mean([metrics.rouge_l(c, r).f1 for c, r in zip(labels, references)]))
    assert text.bleu == pytest.approx(metrics.corpus_bleu(labels, references).score)
    # The judge's length bias, against scipy on the same pairs.
    rated = [i for i in items if i.level is not None and i.label is not None]
    bias = summary.length_bias
    assert bias.n == len(rated)
    lengths = [len(i.label.strip()) for i in rated]
    assert bias.rho == pytest.approx(stats.spearmanr([i.level for i in rated], lengths).statistic)
    assert bias.low < bias.rho < bias.high
    relative = [length / i.features["chars"] for length, i in zip(lengths, rated)]
    assert bias.relative_rho == pytest.approx(stats.spearmanr([i.level for i in rated], relative).statistic)


def test_classification_against_ground_truth_matches_sklearn(make_settings, provider, tmp_path):
    make_settings()
    out = tmp_path / "sentiment"
    invoke(
        "evaluate",
        AMAZON,
        "--label-config",
        ROOT / "label_config" / "sentiment.xml",
        "--size",
        "60",
        "--seed",
        "3",
        "--out",
        out,
        "--reference-field",
        "label",
    )
    run = load_run(out)
    (summary,) = run.versions.values()
    items = load_items(out, summary.name)
    assert len(items) == 60 and all(i.label in ("positive", "negative") for i in items)
    y_true = [i.reference for i in items]
    y_pred = [i.label for i in items]
    labels = ["positive", "negative"]
    c = summary.classification
    assert c.labels == labels and c.n == 60
    assert c.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for k, label in enumerate(labels):
        scores = c.per_class[label]
        assert (scores.precision, scores.recall, scores.f1) == pytest.approx((precision[k], recall[k], f1[k]))
        assert scores.support == support[k]
    assert c.macro_f1 == pytest.approx(f1.mean())
    assert c.confusion == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert 0.5 < c.accuracy < 1.0  # the lexicon labeller is right often, not always: a real test of the counts
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "confusion matrix" in html and "accuracy" in html
    assert summary.text_metrics is None


def test_same_family_warning_is_in_every_report(make_settings, provider, templates, tmp_path):
    make_settings(PRELABEL_JUDGE="openai:gpt-4.1-mini", PRELABEL_ALLOW_SAME_FAMILY="1")
    out = tmp_path / "same"
    v1, _ = templates
    invoke("evaluate", DIALOGSUM, "--prompt", f"v1={v1}", "--size", "5", "--out", out)
    run = load_run(out)
    assert run.family_warning and run.versions["v1"].family_warning == run.family_warning
    assert "SAME-FAMILY" in run.versions["v1"].model_version
    assert 'id="family-warning"' in (out / "report.html").read_text(encoding="utf-8")
    assert "same-family judge" in (out / "report.md").read_text(encoding="utf-8")


def test_existing_run_dir_refuses_another_eval_set(make_settings, provider, templates, tmp_path):
    make_settings()
    v1, v2 = templates
    out = tmp_path / "run"
    invoke(
        "evaluate", DIALOGSUM, "--prompt", f"v1={v1}", "--size", "5", "--out", out, "--eval-set", tmp_path / "a.jsonl"
    )
    result = CliRunner().invoke(
        cli(),
        [
            "evaluate",
            str(DIALOGSUM),
            "--prompt",
            f"v2={v2}",
            "--size",
            "6",
            "--out",
            str(out),
            "--eval-set",
            str(tmp_path / "b.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert list(load_run(out).versions) == ["v1"]


def test_markup_in_inputs_is_escaped(make_settings, provider, templates, tmp_path, llm):
    make_settings()
    llm.rate = lambda conversation, label: 1 if "odd" in conversation else 3
    pool = tmp_path / "pool.jsonl"
    rows = [
        {
            "id": f"x{i}",
            "dialogue": f"A: <script>alert({i})</script> {'odd' if i % 2 else 'even'} <b>there</b>\nB: ok <img src=x>",
            "topic": "<i>markup</i>" if i % 2 else "<u>plain</u>",
        }
        for i in range(6)
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    v1, _ = templates
    out = tmp_path / "markup"
    invoke("evaluate", pool, "--prompt", f"v1={v1}", "--out", out, "--slice-field", "topic", "--min-slice", "1")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html and "<i>markup" not in html
    assert "&lt;script&gt;alert(1)" in html  # the weakest slice's example, shown as text
    assert "topic = &lt;i&gt;markup&lt;/i&gt;" in html


def reviewed(levels: list[tuple[int, int]]) -> list[ReviewedTask]:
    return [
        ReviewedTask(
            task_id=i,
            input_text="x",
            llm_label="a",
            human_label="a" if j == h else "b",
            llm_level=j,
            human_level=h,
            annotation_id=i,
            model_version="v1",
        )
        for i, (j, h) in enumerate(levels)
    ]


def test_judge_calibration_matches_sklearn_and_warns():
    pairs = [(j, h) for j in range(5) for h in range(5) for _ in range(1 + (j == h) * 3)]
    cal = judge_calibration(reviewed(pairs))
    judge, human = [j for j, _ in pairs], [h for _, h in pairs]
    assert cal.n_pairs == len(pairs)
    assert cal.confusion == confusion_matrix(human, judge, labels=list(range(5))).tolist()
    assert cal.kappa == pytest.approx(cohen_kappa_score(judge, human, weights="quadratic", labels=list(range(5))))
    assert cal.kappa < 0.4 and not cal.trusted and "cannot be trusted" in cal.warning

    agreeing = [(level, level) for level in range(5) for _ in range(8)] + [(3, 4), (4, 3), (1, 2)]
    good = judge_calibration(reviewed(agreeing))
    assert good.kappa == pytest.approx(
        cohen_kappa_score([j for j, _ in agreeing], [h for _, h in agreeing], weights="quadratic")
    )
    assert good.kappa > 0.9 and good.trusted and good.warning is None
    assert judge_calibration(reviewed(agreeing), threshold=0.99).warning  # the threshold is configurable
    per_level = {a.name: a for a in good.per_level}
    assert per_level["excellent"].n_reviewer == 9 and per_level["excellent"].recall == pytest.approx(8 / 9)

    few = judge_calibration(reviewed(agreeing[:10]))
    assert few.warning and "uncertain" in few.warning


def disagreeing_corrections(items: list[ItemResult], path: Path) -> list[dict]:
    """A corrections file (as `pull` writes it) whose reviewers disagree with the judge on most items: they
    rate two levels off and edit half the labels. Returns its rows."""
    rows = [
        {
            "task_id": n,
            "source_id": item.source_id,
            "input": item.input_preview,
            "llm_label": item.label,
            "corrected_label": item.label if n % 2 else item.label + " fixed",
            "judge_level": item.level,
            "reviewer_level": (item.level + 2) % 5,
            "model_version": item.model_version,
        }
        for n, item in enumerate(items)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_report_with_reviews_shows_calibration_and_edit_slices(make_settings, provider, templates, tmp_path):
    make_settings()
    v1, _ = templates
    out = tmp_path / "run"
    invoke("evaluate", DIALOGSUM, "--prompt", f"v1={v1}", "--size", "30", "--out", out)
    items = load_items(out, "v1")
    # Reviewers disagree with the judge on most items: they rate everything "moderate" and edit half.
    corrections = tmp_path / "corrections.jsonl"
    rows = disagreeing_corrections(items, corrections)
    result = invoke("report", out, "--reviews", corrections, "--min-slice", "3")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="calibration-warning"' in html and "cannot be trusted" in html
    assert "judge vs reviewer levels" in html
    assert "reviewer edit" in html
    assert "cannot be trusted" in result.output or result.exit_code == 0
    tasks = reviewed_from_corrections(rows)
    assert all(t.reviewed for t in tasks) and len(tasks) == 30


def test_fewshot_examples_reach_the_annotator_prompt(make_settings, provider, templates, tmp_path, llm):
    make_settings()
    v1, _ = templates
    corrections = tmp_path / "corrections.jsonl"
    rows = [
        {
            "source_id": f"c{i}",
            "input": f"A: we talk about {topic} today\nB: yes {topic}",
            "corrected_label": f"They discuss {topic}.",
        }
        for i, topic in enumerate(["trains", "cooking", "music"])
    ]
    corrections.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "fewshot"
    invoke(
        "evaluate",
        DIALOGSUM,
        "--prompt",
        f"v1={v1}",
        "--size",
        "4",
        "--out",
        out,
        "--fewshot-corrections",
        corrections,
        "--fewshot-k",
        "2",
    )
    annotator_prompts = [r.body["messages"][-1]["content"] for r in provider.requests if r.path.endswith("completions")]
    assert len(annotator_prompts) == 4
    for prompt in annotator_prompts:
        assert prompt.count("corrected summary:") == 2 and "[few-shot" not in prompt
        assert prompt.index("Examples corrected by human reviewers") < prompt.index("Conversation:\n")
    summary = load_run(out).versions["v1"]
    assert summary.fewshot and "k=2" in summary.fewshot
    plain = PromptSet.load("summarization", v1, None, "v1")
    assert summary.prompt_hash != plain.content_hash  # few-shot is its own prompt version
    assert summary.model_version.startswith("v1@") and plain.content_hash not in summary.model_version


def test_price_file_prices_the_evaluation_and_the_dry_run(make_settings, provider, templates, tmp_path, monkeypatch):
    """PRELABEL_PRICES reaches every command: evaluate's costs and the label --dry-run estimate use its prices."""
    from prelabel.scripts.label import label

    prices = {"gpt-4o-mini": (1000.0, 2000.0), "claude-haiku-4-5": (3000.0, 5000.0)}
    price_file = tmp_path / "prices.json"
    price_file.write_text(json.dumps({model: {"input": i, "output": o} for model, (i, o) in prices.items()}))
    make_settings(PRELABEL_PRICES=str(price_file))
    monkeypatch.setenv("COLUMNS", "200")  # the versions table on one line per version
    v1, _ = templates
    out = tmp_path / "priced"
    result = invoke("evaluate", DIALOGSUM, "--prompt", f"v1={v1}", "--size", "5", "--out", out)
    summary = load_run(out).versions["v1"]
    assert {u.model for u in summary.usage} == set(prices)
    for usage in summary.usage:
        price_in, price_out = prices[usage.model]
        assert usage.input_tokens > 0
        assert usage.cost_usd == pytest.approx((usage.input_tokens * price_in + usage.output_tokens * price_out) / 1e6)
        assert usage.full_cost_usd == pytest.approx(
            (usage.full_input_tokens * price_in + usage.full_output_tokens * price_out) / 1e6
        )
    assert summary.full_cost_usd == pytest.approx(sum(u.full_cost_usd for u in summary.usage))
    shown = f"${summary.full_cost_usd:.4f}"
    lines = result.output.splitlines()
    assert any(line.split()[:2] == ["v1", "5"] and line.rstrip().endswith(shown) for line in lines), result.output
    assert shown in (out / "report.md").read_text(encoding="utf-8")

    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)  # two commands, so `label` is a subcommand as in the real CLI
    dry = CliRunner().invoke(app, ["label", "-i", str(DIALOGSUM), "-o", str(tmp_path / "out.jsonl"), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    prices_row = next(line for line in dry.output.splitlines() if "USD / 1M in, out" in line)
    assert "1000, 2000" in prices_row and "3000, 5000" in prices_row


def test_compare_and_report_rebuild_the_complete_report_from_the_run(make_settings, provider, templates, tmp_path):
    # The slice fields, the reviews and the thresholds given once are kept with the run: compare and report
    # without their flags write the same complete report, rules included.
    make_settings()
    v1, v2 = templates
    out = tmp_path / "run"
    invoke("evaluate", DIALOGSUM, "--prompt", f"v1={v1}", "--size", "30", "--out", out, "--reference-field", "summary")
    items = load_items(out, "v1")
    corrections = tmp_path / "corrections.jsonl"
    disagreeing_corrections(items, corrections)
    invoke(
        "evaluate",
        DIALOGSUM,
        "--prompt",
        f"v2={v2}",
        "--out",
        out,
        "--slice-field",
        "topic",
        "--reviews",
        corrections,
        "--min-slice",
        "3",
        "--kappa-threshold",
        "0.5",
    )
    corrections.unlink()  # the run keeps its own copy

    def complete(html: str, markdown: str) -> None:
        assert "judge vs reviewer levels" in html and "reviewer edit" in html
        assert "Comparisons on the same items" in html
        for rule in (
            "Better means a higher mean judge level",
            "95% paired bootstrap interval",
            "Welch&#x27;s t-test",
            "rouge-score, Porter stemming on",
            "tok:13a",
            "quadratic weights",
            "Fisher-z intervals",
        ):
            assert rule in html, rule
        assert "The judge and label length" in html and "The judge and label length" in markdown
        assert "## Judge calibration" in markdown and "## Comparisons" in markdown and "## Worst slices" in markdown

    first_html, first_md = (out / "report.html").read_text(), (out / "report.md").read_text()
    complete(first_html, first_md)
    for command in (["compare", out], ["report", out]):
        invoke(*command)
        html, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
        complete(html, markdown)
        assert (html, markdown) == (first_html, first_md)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["report"] == {
        "slice_fields": ["topic"],
        "min_slice": 3,
        "kappa_threshold": 0.5,
        "reviews_from": str(corrections),
    }
    # A flag given again replaces what the run kept, and is kept in turn.
    invoke("report", out, "--slice-field", "chars")
    assert json.loads((out / "summary.json").read_text())["report"]["slice_fields"] == ["chars"]
