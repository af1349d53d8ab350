"""Scores, thresholds and metrics of a fitted pipeline on labelled rows.

The threshold is chosen on validation for a target: `max-f1` (the default),
`precision>=X` (the lowest threshold whose precision reaches X, which keeps
the most recall) or `recall>=X` (the highest threshold whose recall reaches
X, which keeps the most precision). Final metrics are measured on test at
that threshold.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .errors import JobError


def with_score(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Spark's own P(fraud) as `score`."""
    return model.transform(df).withColumn("score", vector_to_array("probability")[1])


def scores_and_labels(scored: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    rows = scored.select("score", "label").toArrow()
    return rows.column("score").to_numpy(), rows.column("label").to_numpy()


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, precision, recall) at every distinct score."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)
    fp = np.cumsum(1 - labels)
    # Only the last row of each run of equal scores is a real threshold.
    last = np.r_[scores[1:] != scores[:-1], True]
    tp, fp, thresholds = tp[last], fp[last], scores[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(labels.sum(), 1)
    return thresholds, precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the PR curve as a step function (scikit-learn's AP)."""
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target: str) -> float:
    """The threshold meeting `target` on these (validation) rows."""
    thresholds, precision, recall = pr_curve(scores, labels)
    if target == "max-f1":
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f1))])
    match = re.fullmatch(r"(precision|recall)>=(0(?:\.\d+)?|1(?:\.0+)?)", target)
    if not match:
        raise JobError(f"threshold target {target!r}: use max-f1, precision>=X or recall>=X (0 <= X <= 1)")
    kind, level = match.group(1), float(match.group(2))
    if kind == "precision":
        ok = np.nonzero(precision >= level)[0]
        if len(ok) == 0:
            raise JobError(f"no threshold reaches precision {level} on validation (best {precision.max():.3f})")
        return float(thresholds[ok[-1]])
    ok = np.nonzero(recall >= level)[0]
    return float(thresholds[ok[0]])


def servable(threshold: float) -> float:
    """The largest float32 value not above `threshold`. The server's scores
    are float32 (ONNX's output) compared with the threshold, Spark's are
    doubles: a row scoring exactly the threshold in Spark may round just
    below it in float32 and flip its label. With this threshold both sides
    label every such tie alike."""
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def metrics(scored: DataFrame, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC, and precision / recall / F1 / confusion at `threshold`."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    auc = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability")
    counts = scored.select(
        F.sum(((F.col("score") >= threshold) & (F.col("label") == 1)).cast("long")).alias("tp"),
        F.sum(((F.col("score") >= threshold) & (F.col("label") == 0)).cast("long")).alias("fp"),
        F.sum(((F.col("score") < threshold) & (F.col("label") == 1)).cast("long")).alias("fn"),
        F.sum(((F.col("score") < threshold) & (F.col("label") == 0)).cast("long")).alias("tn"),
    ).first()
    tp, fp, fn, tn = (int(counts[k] or 0) for k in ("tp", "fp", "fn", "tn"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "roc_auc": auc.evaluate(scored, {auc.metricName: "areaUnderROC"}),
        "pr_auc": auc.evaluate(scored, {auc.metricName: "areaUnderPR"}),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "rows": tp + fp + fn + tn,
    }


# Cards an analyst team checks a day, unless told otherwise (as the
# fraud-detection handbook's card precision at 100).
CARD_K = 100


def card_precision_at_k(days: np.ndarray, cards: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                        k: int = CARD_K) -> dict[str, Any]:
    """Card precision at k: per day, each card scored by its highest
    transaction score and fraudulent if any of its transactions that day is;
    the share of fraudulent cards among that day's k highest (among all the
    day's cards when it has fewer). Cards tied with the k-th share its
    remaining places: each counts places / tied (equal scores are common:
    float scores saturate, forests vote in steps), so no order of card
    numbers decides. Unlike the handbook's, cards found on earlier days stay
    in. `mean` is over the days, `per_day` maps each day (days since 1970)
    to its share."""
    if k < 1:
        raise JobError(f"card precision at k: k must be at least 1, not {k}")
    per_day: dict[int, float] = {}
    if len(scores):
        order = np.lexsort((cards, days))
        days, cards, scores, labels = days[order], cards[order], scores[order], labels[order]
        # One entry per (day, card): its highest score, and fraud if any.
        starts = np.flatnonzero(np.r_[True, (days[1:] != days[:-1]) | (cards[1:] != cards[:-1])])
        card_days = days[starts]
        card_scores = np.maximum.reduceat(scores, starts)
        card_frauds = (np.maximum.reduceat(labels, starts) > 0).astype(np.float64)
        for day in np.unique(card_days):
            day_scores, day_frauds = card_scores[card_days == day], card_frauds[card_days == day]
            if len(day_scores) <= k:
                per_day[int(day)] = float(day_frauds.mean())
                continue
            kth = np.sort(day_scores)[::-1][k - 1]
            above, tied = day_scores > kth, day_scores == kth
            places = k - int(above.sum())
            credit = day_frauds[above].sum() + day_frauds[tied].sum() * places / int(tied.sum())
            per_day[int(day)] = float(credit / k)
    return {"k": k, "mean": float(np.mean(list(per_day.values()))) if per_day else None, "days": len(per_day),
            "per_day": per_day}


def card_precision(scored: DataFrame, k: int = CARD_K) -> dict[str, Any]:
    """Card precision at k of scored rows (`event_time`, `cc_num`, `score`, `label`)."""
    rows = scored.select("event_time", "cc_num", "score", "label").toArrow()
    days = np.floor(rows.column("event_time").to_numpy(zero_copy_only=False) / 86_400).astype(np.int64)
    return card_precision_at_k(days, rows.column("cc_num").to_numpy(zero_copy_only=False),
                               rows.column("score").to_numpy(), rows.column("label").to_numpy(), k)


def score_reference(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """What live drift is measured against (`model.json` `reference`): bin
    edges at the deciles of these (test) scores, merged where equal, the
    share of the scores in each bin (bin i holds [edge i-1, edge i)), and
    the fraud rate."""
    cuts = np.quantile(scores, [i / bins for i in range(1, bins)]) if len(scores) else np.array([])
    edges = sorted({float(c) for c in cuts if 0.0 < c < 1.0})
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    return {
        "score_edges": edges,
        "score_shares": [float(c) / max(len(scores), 1) for c in counts],
        "fraud_rate": float(labels.mean()) if len(labels) else 0.0,
    }
