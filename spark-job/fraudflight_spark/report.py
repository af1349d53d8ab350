"""The human-readable training report: `report.md` with the candidates
compared, the chosen model, its test metrics and confusion matrix, and
`pr_curve.png` (precision / recall on test, the chosen threshold marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fraudflight_spark.evaluation import average_precision, pr_curve


def plot_pr_curve(scores: np.ndarray, labels: np.ndarray, threshold: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    thresholds, precision, recall = pr_curve(scores, labels)
    at = int(np.argmin(np.abs(thresholds - threshold)))
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ax.plot(recall, precision, color="#c0392b", linewidth=1.8, label=f"AP {average_precision(precision, recall):.4f}")
    ax.scatter([recall[at]], [precision[at]], color="black", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _card_precision_line(cards: dict[str, Any] | None) -> str:
    if not cards or cards["mean"] is None:
        return ""
    k = cards["k"]
    return (f"Card precision at {k}: **{cards['mean']:.4f}**, the mean over {cards['days']} test days of the share of "
            f"fraudulent cards among the {k} cards scored highest that day (a card by its highest transaction).")


def _history_line(history: dict[str, Any] | None) -> str:
    if not history:
        return ""
    if history["used"]:
        return "Inputs: the record's features and the card and merchant history features."
    return f"Inputs: the record's features only, without the history features: {history['why_not']}."


def write(out: Path, meta: dict[str, Any], candidates: list[dict[str, Any]]) -> None:
    m = meta["metrics"]
    c = m["confusion"]
    lines = [
        f"# Model {meta['version']}",
        "",
        f"Trained {meta['created_at']} on `{meta['training']['input']}` in {meta['training']['seconds']:.0f} s: "
        f"{meta['training']['rows']['train']:,} training, {meta['training']['rows']['validation']:,} validation and "
        f"{meta['training']['rows']['test']:,} test rows, split by transaction time.",
        "",
        f"Chosen: **{meta['algorithm']}** {meta['params']}, class weights {meta['class_weights']}, "
        f"by validation PR AUC. Threshold {meta['threshold']:.4f} ({meta['threshold_target']} on validation).",
        "",
        _history_line(meta["training"].get("history")),
        "",
        "## Test metrics",
        "",
        "| ROC AUC | PR AUC | precision | recall | F1 |",
        "|---|---|---|---|---|",
        f"| {m['roc_auc']:.4f} | {m['pr_auc']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} |",
        "",
        _card_precision_line(m.get("card_precision")),
        "",
        "Confusion matrix at the threshold:",
        "",
        "| | predicted fraud | predicted legitimate |",
        "|---|---|---|",
        f"| fraud | {c['tp']:,} | {c['fn']:,} |",
        f"| legitimate | {c['fp']:,} | {c['tn']:,} |",
        "",
        "![precision-recall curve on test](pr_curve.png)",
        "",
        "## Candidates (validation)",
        "",
        "| algorithm | parameters | class weights | PR AUC | fit s |",
        "|---|---|---|---|---|",
        *(
            f"| {k['algorithm']} | {k['params']} | {k['class_weights']} | {_fmt(k['validation_pr_auc'])} | {k['fit_seconds']} |"
            for k in candidates
        ),
        "",
        f"ONNX export checked against Spark's own probabilities on {meta['training']['parity_rows_checked']:,} test rows: "
        f"largest difference {meta['training']['parity_max_abs_diff']:.2e}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
