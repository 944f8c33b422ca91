"""`prelabel quality` on small files: the estimators against the libraries they mirror, the CLI's JSON shape,
its errors (file, line, field), the --assume-random refusal, and the matching rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import ppi_py
import pytest
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from prelabel import metrics
from prelabel.quality import stats
from prelabel.scripts.cli import app


def test_power_tuning_is_the_lambda_ppi_py_chooses() -> None:
    rng = np.random.default_rng(3)
    yhat_all = rng.normal(2.5, 1, 3000)
    index = rng.choice(3000, 150, replace=False)
    y = 0.5 * yhat_all[index] + 0.4 + rng.normal(0, 1, 150)
    for w in (np.ones(150), 1 / rng.uniform(0.02, 0.2, 150)):
        lam = stats.power_tuning(y, yhat_all[index], yhat_all, w)
        assert 0 < lam < 1
        tuned = ppi_py.ppi_mean_pointestimate(y, yhat_all[index], yhat_all, lam=None, w=w)
        fixed = ppi_py.ppi_mean_pointestimate(y, yhat_all[index], yhat_all, lam=lam, w=w)
        assert float(tuned[0]) == pytest.approx(float(fixed[0]), abs=1e-12)


def test_ppi_round_is_cross_fitted_ppi_py_on_a_split_fixed_by_the_reviewed_items() -> None:
    """Each fold's PPI++ estimate (ppi_py's, with the lambda fitted on the other folds) weighted by the fold's share
    of the weights is the Hajek mean of y - lambda_fold * (yhat - judge mean), whose variance is the interval's."""
    from scipy.stats import t

    rng = np.random.default_rng(4)
    yhat_all = rng.normal(2.5, 1, 3000)
    index = rng.choice(3000, 150, replace=False)
    y = 0.5 * yhat_all[index] + 0.4 + rng.normal(0, 1, 150)
    w = 1 / rng.uniform(0.02, 0.2, 150)
    estimate, variance, reviews_part, lam = stats.ppi_round(y, yhat_all[index], yhat_all, w, index)
    fold = stats.folds(index, stats.FOLDS)
    assert sorted(np.bincount(fold).tolist()) == [15] * 10
    lams = [stats.power_tuning(y[fold != j], yhat_all[index][fold != j], yhat_all, w[fold != j]) for j in range(10)]
    assert len(set(lams)) == 10 and lam == pytest.approx(np.mean(lams))
    z = y - np.array(lams)[fold] * (yhat_all[index] - yhat_all.mean())
    mean, hajek_variance = stats.hajek(z, w)
    assert estimate == pytest.approx(mean, abs=1e-12)
    assert variance == reviews_part == pytest.approx(hajek_variance * (t.ppf(0.975, 149) / stats.Z95) ** 2)
    # the split follows the reviewed items, not the order of the reviews file
    shuffled = rng.permutation(150)
    again = stats.ppi_round(y[shuffled], yhat_all[index][shuffled], yhat_all, w[shuffled], index[shuffled])
    assert again[0] == pytest.approx(estimate, abs=1e-12) and again[1] == pytest.approx(variance, rel=1e-12)
    # the smallest round a variance needs: each review's lambda from the other two
    small = stats.ppi_round(y[:3], yhat_all[index][:3], yhat_all, w[:3], index[:3])
    assert all(np.isfinite(small)) and small[1] > 0


def test_vectorised_kappa_is_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, (20, 40))
    b = np.clip(a + rng.integers(-1, 2, (20, 40)), 0, 4)
    many = stats.quadratic_kappa_many(a, b)
    for row in range(20):
        assert many[row] == pytest.approx(metrics.quadratic_weighted_kappa(a[row].tolist(), b[row].tolist()))
    interval = stats.kappa_interval(a[0], b[0])
    assert interval is not None and interval.low < interval.estimate < interval.high


@pytest.mark.parametrize(("k", "n"), [(0, 30), (3, 30), (29, 30), (180, 200)])
def test_wilson_is_statsmodels(k: int, n: int) -> None:
    low, high = stats.wilson(k / n, n)
    expected = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (low, high) == pytest.approx(expected, abs=1e-9)


# -- the CLI on small files ---------------------------------------------------------------------------------------


def label_line(i: int, level: int | None, **extra: Any) -> str:
    record = {
        "source_id": f"s{i}",
        "label": f"summary {i}",
        "rating": None,
        "level": level,
        "score": None if level is None else level / 4,
        "reason": "r",
        "unrated_reason": None,
        "error": None,
        "model_version": "v1",
        **extra,
    }
    return json.dumps(record) + "\n"


def review_line(i: int, reviewer: int | None, judge: int | None, **extra: Any) -> str:
    row = {
        "task_id": i,
        "source_id": f"s{i}",
        "model_version": "v1",
        "llm_label": f"summary {i}",
        "judge_level": judge,
        "reviewer_level": reviewer,
        "review": "unchanged",
        "rating_anchored": False,  # as pull writes it since blind reviews
        **extra,
    }
    return json.dumps(row) + "\n"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    truth = rng.choice(5, 300, p=[0.05, 0.05, 0.15, 0.4, 0.35])
    judge = np.clip(truth + rng.integers(0, 2, 300), 0, 4)
    labels = tmp_path / "labeled.jsonl"
    labels.write_text(
        "".join(label_line(i, None if i == 10 else int(judge[i])) for i in range(300))
        + label_line(999, None, label=None, error="provider failed"),
        encoding="utf-8",
    )
    reviews = tmp_path / "corrections.jsonl"
    lines = [
        review_line(i, int(truth[i]), int(judge[i]), round="round-1", inclusion_probability=0.2, rating_anchored=i < 6)
        for i in range(0, 300, 5)
    ]
    lines.append(review_line(1, 3, 3, round="round-1", inclusion_probability=0.2, llm_label="an older label"))
    lines.append(review_line(5000, 3, 3, round="round-1", inclusion_probability=0.2))
    lines.append("{not json\n")
    lines.append(review_line(2, 9, 3, round="round-1", inclusion_probability=0.2))
    lines.append(review_line(3, 3, 3, round="round-1", inclusion_probability=1.5))
    reviews.write_text("".join(lines), encoding="utf-8")
    return labels, reviews


def run(*args: object) -> Any:
    return CliRunner().invoke(app, ["quality", *map(str, args)])


def test_json_report_shape_and_counts(files: tuple[Path, Path]) -> None:
    labels, reviews = files
    result = run("--labels", labels, "--reviews", reviews, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_items"] == 300 and report["n_rated"] == 299 and report["n_failed"] == 1
    assert report["n_reviewed"] == 60 and report["threshold"] == 3
    share = report["share_at_least"]
    assert 0 < share["judge_only"] < 1
    for figure in (share["reviewed_only"], share["combined"], report["mean_level"]["combined"]):
        assert figure["low"] <= figure["estimate"] <= figure["high"]
    assert "prediction-powered" in share["combined"]["method"]
    assert (
        share["combined"]["high"] - share["combined"]["low"]
        < share["reviewed_only"]["high"] - share["reviewed_only"]["low"]
    )
    kappa = report["agreement"]["kappa_quadratic"]
    assert kappa["low"] <= kappa["estimate"] <= kappa["high"] and report["agreement"]["n_pairs"] == 59
    assert [row["judge_level"] for row in report["calibration"]] == [0, 1, 2, 3, 4]
    assert report["reviews_needed"]["additional"] > 0
    matching = report["matching"]
    assert (matching["other_version"], matching["unknown_source"], matching["rating_anchored"]) == (1, 1, 2)
    assert any("anchored" in w for w in report["warnings"])
    assert any("another version" in w for w in report["warnings"])
    problems = "\n".join(report["problems"])
    assert f"{reviews} line 63: not JSON" in problems
    assert f"{reviews} line 64: field `reviewer_level`" in problems
    assert f"{reviews} line 65: field `inclusion_probability`" in problems


def test_reviews_without_inclusion_probability_are_refused_unless_assumed_random(tmp_path: Path) -> None:
    labels = tmp_path / "labeled.jsonl"
    labels.write_text("".join(label_line(i, i % 5) for i in range(100)), encoding="utf-8")
    reviews = tmp_path / "corrections.jsonl"
    reviews.write_text("".join(review_line(i, (i + 1) % 5, i % 5) for i in range(0, 100, 2)), encoding="utf-8")
    refused = run("--labels", labels, "--reviews", reviews)
    assert refused.exit_code == 2
    message = " ".join(refused.output.split())
    assert f"{reviews} line 1" in message and "`inclusion_probability`" in message and "--assume-random" in message
    accepted = run("--labels", labels, "--reviews", reviews, "--assume-random", "--json")
    assert accepted.exit_code == 0, accepted.output
    report = json.loads(accepted.stdout)
    assert report["assume_random"] and report["n_reviewed"] == 50
    # a uniform sample's reviewed-only share is Wilson's interval on the counts
    k = sum(1 for i in range(0, 100, 2) if (i + 1) % 5 >= 3)
    low, high = proportion_confint(k, 50, alpha=0.05, method="wilson")
    assert report["share_at_least"]["reviewed_only"]["low"] == pytest.approx(low)
    assert report["share_at_least"]["reviewed_only"]["high"] == pytest.approx(high)


def test_bad_labels_name_the_file_line_and_field(tmp_path: Path) -> None:
    labels = tmp_path / "labeled.jsonl"
    labels.write_text(label_line(0, 3) + label_line(1, 7) + "[1, 2]\n", encoding="utf-8")
    reviews = tmp_path / "corrections.jsonl"
    reviews.write_text(review_line(0, 3, 3), encoding="utf-8")
    result = run("--labels", labels, "--reviews", reviews, "--assume-random", "--json")
    assert result.exit_code == 0, result.output
    problems = json.loads(result.stdout)["problems"]
    assert problems[0].startswith(f"{labels} line 2: field `level`")
    assert problems[1] == f"{labels} line 3: a JSON list, not a record"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("nonsense\n", encoding="utf-8")
    failed = run("--labels", empty, "--reviews", reviews)
    assert failed.exit_code == 2
    assert f"{empty}: no labeled item to measure ({empty} line 1: not JSON" in " ".join(failed.output.split())


def test_nothing_matching_is_an_error_that_says_why(tmp_path: Path) -> None:
    labels = tmp_path / "labeled.jsonl"
    labels.write_text(label_line(0, 3), encoding="utf-8")
    reviews = tmp_path / "corrections.jsonl"
    reviews.write_text(review_line(0, 3, 3, llm_label="another text") + review_line(8, 3, 3), encoding="utf-8")
    result = run("--labels", labels, "--reviews", reviews, "--assume-random")
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no review matches a labeled item" in message
    assert "1 with a source id not in the labels, 1 of another version of the label" in message


def test_table_output_and_threshold(files: tuple[Path, Path]) -> None:
    labels, reviews = files
    result = CliRunner().invoke(
        app, ["quality", "--labels", str(labels), "--reviews", str(reviews), "--threshold", "excellent"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "rated excellent or better by a reviewer" in text
    assert "judge only (biased)" in text and "combined: quote this" in text
    bad = run("--labels", labels, "--reviews", reviews, "--threshold", "great")
    assert bad.exit_code == 2 and "--threshold 'great'" in bad.output


def test_a_label_studio_export_is_read_as_reviews(tmp_path: Path) -> None:
    labels = tmp_path / "labeled.jsonl"
    labels.write_text("".join(label_line(i, 3 + i % 2) for i in range(40)), encoding="utf-8")

    def result(summary: str, rating: str) -> list[dict[str, Any]]:
        return [
            {"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": [summary]}},
            {"from_name": "rating", "to_name": "dialogue", "type": "choices", "value": {"choices": [rating]}},
        ]

    export = [
        {
            "id": 100 + i,
            "data": {
                "dialogue": [{"author": "A", "text": "hi"}],
                "source_id": f"s{i}",
                "prelabel_round": "round-1",
                "prelabel_inclusion_probability": 0.5,
            },
            "predictions": [{"id": i, "result": result(f"summary {i}", "good"), "model_version": "v1"}],
            "annotations": [{"id": 500 + i, "result": result(f"summary {i}", "moderate" if i % 3 else "excellent")}]
            if i % 2 == 0
            else [],
        }
        for i in range(40)
    ]
    export[0]["data"]["prelabel_inclusion_probability"] = "often"
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    result_ = run("--labels", labels, "--reviews", path, "--json")
    assert result_.exit_code == 0, result_.output
    report = json.loads(result_.stdout)
    assert report["n_reviewed"] == 19  # 20 reviewed tasks, task 100's probability unreadable
    assert report["problems"] == [
        f"{path}: task 100 data.prelabel_inclusion_probability: 'often' is not a probability in (0, 1]"
    ]
    assert report["rounds"][0]["name"] == "round-1"


def test_a_corrections_row_from_before_blind_reviews_counts_as_anchored(files, tmp_path):
    """A row without `rating_anchored` comes from an older pull, when every rating was pre-filled: flagged."""
    labels, reviews = files
    old = tmp_path / "old_corrections.jsonl"
    lines = []
    for line in reviews.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            lines.append(line)  # the fixture's bad line stays bad
            continue
        lines.append(json.dumps({key: value for key, value in row.items() if key != "rating_anchored"}))
    old.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result_ = run("--labels", labels, "--reviews", old, "--json")
    assert result_.exit_code == 0, result_.output
    report = json.loads(result_.stdout)
    assert report["matching"]["rating_anchored"] == report["n_reviewed"] > 0
    assert any("anchored" in warning for warning in report["warnings"])
