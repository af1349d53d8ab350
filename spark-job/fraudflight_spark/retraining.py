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
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .errors import JobError
from .evaluation import CARD_K, average_precision, card_precision_at_k, pr_curve

DAY = 86_400
T = TypeVar("T")

# What a Cassandra that is restarting or overloaded answers, as Spark
# reports the driver's exceptions: worth trying again after a pause (Spark's
# own task retries come at once, within the same outage).
TRANSIENT = (
    "ReadFailureException", "ReadTimeoutException", "WriteTimeoutException", "UnavailableException",
    "AllNodesFailedException", "NoNodeAvailableException", "DriverTimeoutException",
    "Failed to open native connection", "Connection refused",
)


def with_retries(step: str, run: Callable[[], T], attempts: int, pause_s: float) -> T:
    """`run()`, tried up to `attempts` times while it fails for a
    [`TRANSIENT`] reason, the pause doubling each time; any other failure,
    or the last, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except Exception as e:
            if attempt == attempts or not any(t in str(e) for t in TRANSIENT):
                raise
            print(f"retrain.py: {step} failed ({failure_summary(e)}); trying again in {pause_s:.0f} s "
                  f"({attempt + 1} of {attempts})", file=sys.stderr, flush=True)
            time.sleep(pause_s)
            pause_s *= 2
    raise AssertionError("unreachable")


def failure_summary(e: BaseException, limit: int = 600) -> str:
    """One line for a Spark failure: the first exception line of its
    message and its innermost cause (a Java stack trace ends in frames)."""
    # Py4J puts ": " before the Java exception's own line.
    lines = [line.strip().removeprefix(": ") for line in str(e).splitlines()]
    exception = re.compile(r"^(?:Caused by: )?[\w.$]+(?:Exception|Error)\b")
    named = [line for line in lines if exception.match(line)]
    parts = [named[0], named[-1]] if len(named) > 1 else named or [next((x for x in lines if x), type(e).__name__)]
    return " / ".join(dict.fromkeys(parts))[:limit]


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
    # Card precision at `card_k`, the mean over the judging days (None when
    # the rows carry no cards or days).
    card_precision: float | None = None
    card_k: int = CARD_K

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


def evaluate(version: str, scores: np.ndarray, labels: np.ndarray, threshold: float,
             cards: tuple[np.ndarray, np.ndarray] | None = None, card_k: int = CARD_K) -> Evaluation:
    """The model's measures on these rows; `cards` = (day, card) of each row
    for card precision at `card_k`."""
    _, precision_curve, recall_curve = pr_curve(scores, labels)
    card_precision = card_precision_at_k(cards[0], cards[1], scores, labels, card_k)["mean"] if cards else None
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
        card_precision=card_precision,
        card_k=card_k,
    )


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


# What a challenger must gain on: average precision, or card precision at k.
MEASURES = ("ap", "card-precision")


def decide(champion: Evaluation, challenger: Evaluation, margin: float, by: str = "ap") -> Decision:
    """Deploy only if the challenger beats the champion by `margin` in AP
    (`by="ap"`) or in card precision at k (`by="card-precision"`), and its
    precision at its threshold is no worse."""
    if by == "ap":
        name, old, new = "AP", champion.average_precision, challenger.average_precision
    elif by == "card-precision":
        if champion.card_precision is None or challenger.card_precision is None:
            raise JobError("decide by card precision: the judged rows carry no cards and days")
        name, old, new = f"card precision at {challenger.card_k}", champion.card_precision, challenger.card_precision
    else:
        raise JobError(f"decide by {by!r}: use one of {', '.join(MEASURES)}")
    gain = new - old
    if gain < margin:
        return Decision(False, f"{name} {new:.4f} vs the champion's {old:.4f}: a gain of {gain:+.4f}, "
                               f"under the margin {margin}")
    if challenger.precision < champion.precision:
        return Decision(False, f"{name} gains {gain:+.4f}, but precision at the threshold falls from "
                               f"{champion.precision:.4f} to {challenger.precision:.4f}")
    return Decision(True, f"{name} {new:.4f} vs {old:.4f} ({gain:+.4f} >= margin {margin}); precision "
                          f"{challenger.precision:.4f} vs {champion.precision:.4f}")
