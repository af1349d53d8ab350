"""Derived features, defined exactly as in Rust (src/score/features.rs).

- `distance_km`: haversine from home (lat, long) to merchant, Earth radius
  6371 km, with the same operation order as the Rust code.
- `age`: whole years between `dob` and the transaction date (UTC).
- `hour`: hour of the transaction, 0-23, UTC.

The transaction time is `unix_time` when present, else
`trans_date_trans_time` read as UTC. The session time zone must be UTC
(`session.spark()` sets it).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .errors import JobError

EARTH_RADIUS_KM = 6371.0
DERIVED = ("distance_km", "age", "hour")


def event_time(df: DataFrame) -> Column:
    """Unix seconds of each transaction."""
    parts = []
    if "unix_time" in df.columns:
        parts.append(F.col("unix_time").cast("long"))
    if "trans_date_trans_time" in df.columns:
        parts.append(F.unix_timestamp(F.col("trans_date_trans_time"), "yyyy-MM-dd HH:mm:ss"))
    if not parts:
        raise JobError("no transaction time: one of unix_time or trans_date_trans_time is needed")
    return F.coalesce(*parts) if len(parts) > 1 else parts[0]


def haversine_km(lat: Column, long: Column, merch_lat: Column, merch_long: Column) -> Column:
    dlat = F.radians(merch_lat - lat)
    dlon = F.radians(merch_long - long)
    s_lat = F.sin(dlat / 2.0)
    s_lon = F.sin(dlon / 2.0)
    a = s_lat * s_lat + F.cos(F.radians(lat)) * F.cos(F.radians(merch_lat)) * s_lon * s_lon
    return F.lit(2.0 * EARTH_RADIUS_KM) * F.asin(F.sqrt(a))


def with_features(df: DataFrame) -> DataFrame:
    """Adds `event_time` and the derived features; casts inputs to the record
    types (strings for text, doubles for coordinates and amounts)."""
    df = df.withColumn("event_time", event_time(df))
    ts = F.timestamp_seconds(F.col("event_time"))
    day = F.to_date(ts)
    dob = F.to_date(F.col("dob"), "yyyy-MM-dd")
    birthday_passed = (F.month(day) > F.month(dob)) | (
        (F.month(day) == F.month(dob)) & (F.dayofmonth(day) >= F.dayofmonth(dob))
    )
    age = F.year(day) - F.year(dob) - F.when(birthday_passed, 0).otherwise(1)
    for name in ("amt", "lat", "long", "merch_lat", "merch_long"):
        df = df.withColumn(name, F.col(name).cast("double"))
    return (
        df.withColumn("cc_num", F.col("cc_num").cast("string"))
        .withColumn("distance_km", haversine_km(F.col("lat"), F.col("long"), F.col("merch_lat"), F.col("merch_long")))
        .withColumn("age", age.cast("double"))
        .withColumn("hour", F.hour(ts).cast("double"))
    )
