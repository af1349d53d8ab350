"""History features in Spark, from the table shared with the Rust service
(`history_features.json`, read by `src/history/definitions.rs`).

Per card, over the card's transactions with `unix_time` in `[t - W, t)`
(range windows ending one second before `t`: others in the same second are
not earlier), the count and the mean amount in integer cents; the amount
ratio to the 30-day mean; seconds and haversine km since the previous
transaction (the latest earlier one, ties broken by the greatest
`trans_num`, as Rust orders its events). Per merchant, whole UTC days
`[D - delay - w, D - delay)`: transactions and the share labelled fraud.

The stream computes the same with keyed state; `tests/test_history_parity.py`
compares the two on every feature of every record, to 1e-9.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from .errors import JobError
from .features import haversine_km

TABLE: dict[str, Any] = json.loads(resources.files(__package__).joinpath("history_features.json").read_text())
DAY: int = TABLE["day_seconds"]
DELAY: int = TABLE["label_delay_days"]
# Days after the warm-up a history model needs: enough for the time split's
# train, validation and test days.
MIN_DAYS_AFTER_WARM_UP = 7
FEATURES: list[dict[str, Any]] = TABLE["features"]
NAMES: tuple[str, ...] = tuple(f["name"] for f in FEATURES)


def _card_window(days: int | None) -> Window:
    by_time = Window.partitionBy("cc_num").orderBy("event_time")
    start = Window.unboundedPreceding if days is None else -days * DAY
    return by_time.rangeBetween(start, -1)


def _mean(cents: Column, count: Column) -> Column:
    """sum / count / 100 in double, 0 when empty: the Rust operations, in order."""
    return F.when(count > 0, cents.cast("double") / count.cast("double") / F.lit(100.0)).otherwise(F.lit(0.0))


def _card_feature(feature: dict[str, Any], amt_cents: Column) -> Column:
    days, aggregate = feature["days"], feature["aggregate"]
    window = _card_window(days)
    count = F.count(F.lit(1)).over(window)
    cents = F.coalesce(F.sum(amt_cents).over(window), F.lit(0))
    if aggregate == "count":
        return count.cast("double")
    if aggregate == "mean_amount":
        return _mean(cents, count)
    if aggregate == "amount_ratio":
        return F.when(cents > 0, F.col("amt") / _mean(cents, count)).otherwise(F.lit(-1.0))
    # The previous transaction: the greatest (event_time, trans_num) before t.
    previous = F.max(F.struct("event_time", "trans_num", "merch_lat", "merch_long")).over(_card_window(None))
    if aggregate == "secs_since_prev":
        capped = F.least(F.col("event_time") - previous["event_time"], F.lit(days * DAY))
        return F.when(previous.isNull(), F.lit(days * DAY + 1)).otherwise(capped).cast("double")
    if aggregate == "km_from_prev":
        km = haversine_km(previous["merch_lat"], previous["merch_long"], F.col("merch_lat"), F.col("merch_long"))
        return F.when(previous.isNull(), F.lit(-1.0)).otherwise(km)
    raise ValueError(f"{feature['name']}: no Spark implementation of card aggregate {aggregate!r}")


def _merchant_tiles(df: DataFrame, label: str) -> DataFrame:
    """Per (merchant, day): the windowed sums every transaction of that day reads."""
    tiles = (
        df.where(F.col("merchant").isNotNull() & (F.col("merchant") != ""))
        .groupBy("merchant", "day")
        .agg(F.count(F.lit(1)).alias("_tx"), F.sum(F.when(F.col(label) == 1, 1).otherwise(0)).alias("_fraud"))
    )
    by_day = Window.partitionBy("merchant").orderBy("day")
    for feature in (f for f in FEATURES if f["entity"] == "merchant"):
        window = by_day.rangeBetween(-(DELAY + feature["days"]), -(DELAY + 1))
        tx = F.coalesce(F.sum("_tx").over(window), F.lit(0))
        fraud = F.coalesce(F.sum("_fraud").over(window), F.lit(0))
        if feature["aggregate"] == "count":
            value = tx.cast("double")
        elif feature["aggregate"] == "fraud_rate":
            value = F.when(tx > 0, fraud.cast("double") / tx.cast("double")).otherwise(F.lit(0.0))
        else:
            raise ValueError(f"{feature['name']}: no Spark implementation of merchant aggregate {feature['aggregate']!r}")
        tiles = tiles.withColumn(feature["name"], value)
    return tiles.drop("_tx", "_fraud")


def with_history(df: DataFrame, label: str = "is_fraud") -> DataFrame:
    """Adds every history feature to transactions that went through
    `features.with_features` (it adds `event_time`). `label` is the column
    of confirmed outcomes (0/1) merchant risk counts."""
    amt_cents = F.round(F.col("amt") * F.lit(100.0)).cast("long")
    out = df.withColumn("day", F.floor(F.col("event_time") / F.lit(DAY)).cast("long"))
    for feature in (f for f in FEATURES if f["entity"] == "card"):
        out = out.withColumn(feature["name"], _card_feature(feature, amt_cents))
    merchant_names = [f["name"] for f in FEATURES if f["entity"] == "merchant"]
    out = out.join(_merchant_tiles(out, label), on=["merchant", "day"], how="left")
    for name in merchant_names:
        out = out.withColumn(name, F.coalesce(F.col(name), F.lit(0.0)))
    return out.drop("day")


def warm_up_days() -> int:
    """Days before every card window is complete: the longest card window."""
    return max(f["days"] for f in FEATURES if f["entity"] == "card")


def choose(asked: bool | None, first: float, last: float) -> tuple[bool, str]:
    """Whether to train with the history features, for an input whose
    transactions run from `first` to `last` (seconds) and `asked` = True
    (--history), False (--no-history) or None (neither); when not, why.
    --history on an input too short for them is an error."""
    if asked is False:
        return False, "--no-history"
    warm_up = warm_up_days()
    need = warm_up + MIN_DAYS_AFTER_WARM_UP
    # Calendar days (UTC) the transactions fall on, first and last included.
    covered = int(last // DAY - first // DAY) + 1
    if covered >= need:
        return True, ""
    why = (f"the input covers {covered} days; the history features need {need} "
           f"({warm_up} to warm their windows up, then {MIN_DAYS_AFTER_WARM_UP} to train, validate and test on)")
    if asked:
        raise JobError(f"--history: {why}")
    return False, why


def after_warm_up(part: DataFrame, everything: DataFrame) -> DataFrame:
    """The rows of `part` at least the longest card window after the first
    transaction of `everything`: before that no window is complete."""
    first = everything.agg(F.min("event_time")).first()[0]
    return part.where(F.col("event_time") >= F.lit(first + warm_up_days() * DAY))
