"""The champion / challenger rules of `retrain.py`: which stored days are
labelled, which train and which judge, how a model is scored on the
outcomes the service stored, and when a challenger may replace the champion.

Truth is what came back as labels (the `labels` table): a transaction with a
fraud label is fraud, any other transaction older than the label delay is
genuine. The records' own `is_fraud` is never used — in the stream it is
not a label (DESIGN.md, "History features and labels").

Both models are scored with ONNX Runtime on the same stored rows, with the
features the service stored for them (derived and history features as
computed live), so the comparison is the one live scoring would have made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .errors import JobError
from .evaluation import average_precision, pr_curve

DAY = 86_400


@dataclass(frozen=True)
class Windows:
    """Unix-second bounds: train on [train_start, eval_start), judge on
    [eval_start, horizon); nothing at or after `horizon` counts as labelled.
    Whole UTC days, as the service's live quality counts them: a day is
    labelled once `label_delay_days` more days have begun after it."""

    newest: int
    horizon: int
    eval_start: int
    train_start: int

    @staticmethod
    def of(newest: int, label_delay_days: int, eval_days: int, train_days: int) -> Windows:
        horizon = (newest // DAY - label_delay_days) * DAY
        eval_start = horizon - eval_days * DAY
        return Windows(newest, horizon, eval_start, eval_start - train_days * DAY)


def with_label_truth(transactions: DataFrame, labels: DataFrame) -> DataFrame:
    """`is_fraud` = the newest label of the transaction, genuine without one."""
    confirmed = labels.select("cc_num", "trans_num", F.col("is_fraud").cast("long").alias("_label"))
    joined = transactions.join(confirmed, on=["cc_num", "trans_num"], how="left")
    return joined.withColumn("is_fraud", F.coalesce(F.col("_label"), F.lit(0)).cast("long")).drop("_label")


@dataclass(frozen=True)
class Evaluation:
    """A model's numbers on the judging days."""

    version: str
    rows: int
    frauds: int
    threshold: float
    average_precision: float
    roc_auc: float | None
    precision: float
    recall: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def load_meta(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "model.json").read_text())


def find_model_dir(version: str, roots: list[Path]) -> Path:
    """The directory under `roots` whose model.json has this version."""
    for root in roots:
        for meta in sorted(root.rglob("model.json")):
            try:
                if load_meta(meta.parent).get("version") == version:
                    return meta.parent
            except (OSError, json.JSONDecodeError):
                continue
    searched = ", ".join(str(r) for r in roots)
    raise JobError(f"the champion {version} is not under {searched}: pass --models DIR (its model directory's parent)")


def feeds(table: pa.Table, inputs: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """ONNX inputs from stored columns: strings (null = ""), doubles."""
    out: dict[str, np.ndarray] = {}
    for i in inputs:
        name = i["name"]
        if name not in table.column_names:
            raise JobError(f"the model needs `{name}`, which the stored outcomes lack")
        column = table.column(name)
        if i["type"] == "string":
            out[name] = np.array([[v if v is not None else ""] for v in column.to_pylist()], dtype=object)
        else:
            if column.null_count:
                raise JobError(f"`{name}` is null in {column.null_count} stored outcomes (was history off?)")
            out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)
    return out


def score(model_dir: Path, table: pa.Table) -> np.ndarray:
    """P(fraud) of every row by the model in `model_dir`."""
    meta = load_meta(model_dir)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    output = meta.get("output", "probability")
    return session.run([output], feeds(table, meta["inputs"]))[0][:, 0].astype(np.float64)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mann-Whitney ROC AUC with ties as halves; None without both classes."""
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def evaluate(version: str, scores: np.ndarray, labels: np.ndarray, threshold: float) -> Evaluation:
    _, precision_curve, recall_curve = pr_curve(scores, labels)
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    alerts, frauds = int(predicted.sum()), int(labels.sum())
    return Evaluation(
        version=version,
        rows=len(labels),
        frauds=frauds,
        threshold=threshold,
        average_precision=average_precision(precision_curve, recall_curve),
        roc_auc=roc_auc(scores, labels),
        precision=tp / alerts if alerts else 0.0,
        recall=tp / frauds if frauds else 0.0,
    )


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


def decide(champion: Evaluation, challenger: Evaluation, margin: float) -> Decision:
    """Deploy only if the challenger's AP beats the champion's by `margin`
    and its precision at its threshold is no worse."""
    gain = challenger.average_precision - champion.average_precision
    if gain < margin:
        return Decision(False, f"AP {challenger.average_precision:.4f} vs the champion's "
                               f"{champion.average_precision:.4f}: a gain of {gain:+.4f}, under the margin {margin}")
    if challenger.precision < champion.precision:
        return Decision(False, f"AP gains {gain:+.4f}, but precision at the threshold falls from "
                               f"{champion.precision:.4f} to {challenger.precision:.4f}")
    return Decision(True, f"AP {challenger.average_precision:.4f} vs {champion.average_precision:.4f} "
                          f"({gain:+.4f} >= margin {margin}); precision {challenger.precision:.4f} vs "
                          f"{champion.precision:.4f}")
