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


def test_card_precision_judges_when_asked() -> None:
    days = np.array([0, 0, 0, 1, 1, 1])
    cards = np.array(["a", "b", "c", "a", "b", "c"])
    labels = np.array([1, 0, 0, 0, 1, 0])
    # The champion ranks the fraudulent card first on both days, the challenger last.
    champion = retraining.evaluate("old", np.array([0.9, 0.2, 0.1, 0.1, 0.9, 0.2]), labels, 0.5, (days, cards), 1)
    challenger = retraining.evaluate("new", np.array([0.1, 0.9, 0.2, 0.9, 0.1, 0.2]), labels, 0.5, (days, cards), 1)
    assert (champion.card_precision, challenger.card_precision, challenger.card_k) == (1.0, 0.0, 1)
    kept = retraining.decide(champion, challenger, margin=0.0, by="card-precision")
    assert not kept.deploy and "card precision at 1 0.0000 vs the champion's 1.0000" in kept.reason
    assert retraining.decide(challenger, champion, margin=0.5, by="card-precision").deploy
    with pytest.raises(JobError, match="no cards and days"):
        retraining.decide(evaluation("old", 0.6, 0.8), evaluation("new", 0.7, 0.9), 0.0, by="card-precision")
    with pytest.raises(JobError, match="use one of ap, card-precision"):
        retraining.decide(champion, challenger, 0.0, by="f1")


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


def test_a_cassandra_step_is_tried_again_while_cassandra_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(retraining.time, "sleep", pauses.append)
    calls = iter([RuntimeError("com.datastax.oss.driver.api.core.AllNodesFailedException: All 1 node(s) tried"),
                  RuntimeError("Caused by: ...servererrors.ReadFailureException: Cassandra failure during read"),
                  "read"])

    def step() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retraining.with_retries("reading", step, attempts=3, pause_s=30) == "read"
    assert pauses == [30, 60]
    # Out of attempts, or a failure no pause mends: raised at once.
    with pytest.raises(RuntimeError, match="ReadTimeoutException"):
        retraining.with_retries("reading", lambda: (_ for _ in ()).throw(RuntimeError("ReadTimeoutException")), 1, 30)
    with pytest.raises(KeyError):
        retraining.with_retries("reading", lambda: {}["missing"], attempts=5, pause_s=30)
    assert pauses == [30, 60]


def test_a_spark_failure_is_one_line_naming_its_cause() -> None:
    trace = """An error occurred while calling o88.collectToPython.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 3 in stage 2.0 failed 4 times
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2935)
Caused by: java.io.IOException: Exception during execution of SELECT
\tat com.datastax.spark.connector.rdd.CassandraTableScanRDD.fetchTokenRange(CassandraTableScanRDD.scala:349)
Caused by: com.datastax.oss.driver.api.core.servererrors.ReadFailureException: Cassandra failure during read query
\tat com.datastax.oss.driver.api.core.servererrors.ReadFailureException.copy(ReadFailureException.java:130)
\t... 66 more"""
    summary = retraining.failure_summary(RuntimeError(trace))
    assert "\n" not in summary
    assert summary.startswith("org.apache.spark.SparkException: Job aborted due to stage failure")
    assert summary.endswith("ReadFailureException: Cassandra failure during read query")
