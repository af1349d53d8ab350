"""The champion / challenger rules of retrain.py, without Spark or services:
which days train and judge, the measures both models are judged by, and
when a challenger is deployed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fraudflight_spark import retraining
from fraudflight_spark.errors import JobError
from fraudflight_spark.retraining import DAY, Evaluation, Windows


def test_windows_are_whole_days_before_the_label_delay() -> None:
    newest = 100 * DAY + 5 * 3600  # day 100, 05:00
    w = Windows.of(newest, label_delay_days=7, eval_days=7, train_days=30)
    # Days 0..92 are labelled (the service calls a day complete when day + 7 < newest day).
    assert w.horizon == 93 * DAY
    assert w.eval_start == 86 * DAY
    assert w.train_start == 56 * DAY


def test_measures_match_hand_computed_values() -> None:
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.1, 0.05])
    labels = np.array([1, 0, 1, 1, 0, 0])
    e = retraining.evaluate("v", scores, labels, threshold=0.5)
    # scikit-learn: average_precision_score = (1 + 2/3 + 3/4) / 3, roc_auc_score = 7/9.
    assert e.average_precision == pytest.approx((1 + 2 / 3 + 0.75) / 3, abs=1e-12)
    assert e.roc_auc == pytest.approx(7 / 9, abs=1e-12)
    assert (e.precision, e.recall, e.frauds, e.rows) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3, 6)
    # Ties count half in the AUC.
    assert retraining.roc_auc(np.array([0.7, 0.7, 0.2]), np.array([1, 0, 0])) == pytest.approx(0.75)
    assert retraining.roc_auc(np.array([0.7, 0.2]), np.array([0, 0])) is None


def evaluation(version: str, ap: float, precision: float) -> Evaluation:
    return Evaluation(version, rows=1000, frauds=10, threshold=0.5, average_precision=ap, roc_auc=0.9,
                      precision=precision, recall=0.5)


def test_a_challenger_is_deployed_only_when_better_by_the_margin_and_no_less_precise() -> None:
    champion = evaluation("old", ap=0.60, precision=0.80)
    assert retraining.decide(champion, evaluation("new", 0.70, 0.85), margin=0.05).deploy
    kept = retraining.decide(champion, evaluation("new", 0.63, 0.90), margin=0.05)
    assert not kept.deploy and "under the margin 0.05" in kept.reason
    imprecise = retraining.decide(champion, evaluation("new", 0.90, 0.70), margin=0.05)
    assert not imprecise.deploy and "precision" in imprecise.reason


def test_the_champion_is_found_by_version_or_named_missing(tmp_path: Path) -> None:
    (tmp_path / "a" / "v7").mkdir(parents=True)
    (tmp_path / "a" / "v7" / "model.json").write_text(json.dumps({"version": "gbt-7"}))
    assert retraining.find_model_dir("gbt-7", [tmp_path]) == tmp_path / "a" / "v7"
    with pytest.raises(JobError, match="the champion gbt-8 is not under"):
        retraining.find_model_dir("gbt-8", [tmp_path])


def test_stored_columns_feed_the_model_or_name_what_is_missing() -> None:
    table = pa.table({"category": ["a", None], "amt": [1.0, 2.0], "card_tx_1d": [1.0, None]})
    fed = retraining.feeds(table, [{"name": "category", "type": "string"}, {"name": "amt", "type": "double"}])
    assert fed["category"].tolist() == [["a"], [""]]
    assert fed["amt"].shape == (2, 1)
    with pytest.raises(JobError, match="`card_tx_1d` is null in 1 stored outcomes"):
        retraining.feeds(table, [{"name": "card_tx_1d", "type": "double"}])
    with pytest.raises(JobError, match="needs `merch_tx_7d`"):
        retraining.feeds(table, [{"name": "merch_tx_7d", "type": "double"}])


def test_the_drift_reference_bins_the_test_scores_as_the_server_reads_them() -> None:
    from fraudflight_spark.evaluation import score_reference

    scores = np.r_[np.zeros(900), np.linspace(0.5, 0.99, 100)]
    labels = np.r_[np.zeros(990), np.ones(10)]
    ref = score_reference(scores, labels)
    # Nine deciles of which eight are 0 (merged away): one edge, two bins.
    assert len(ref["score_shares"]) == len(ref["score_edges"]) + 1
    assert ref["score_shares"][0] == pytest.approx(0.9)
    assert sum(ref["score_shares"]) == pytest.approx(1.0)
    assert ref["fraud_rate"] == pytest.approx(0.01)
    assert ref["score_edges"] == sorted(set(ref["score_edges"]))
