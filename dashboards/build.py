#!/usr/bin/env python3
"""Writes the saved objects of the "Fraud overview" and "Model quality"
dashboards for Kibana 8 (`kibana/*.ndjson`) and OpenSearch Dashboards 2
(`opensearch-dashboards/*.ndjson`) from one description.

Both products read the same aggregation-based visualisations (`visState`),
saved search and dashboard; they differ in the alert map (Kibana's Maps app
`map` object, OpenSearch Dashboards' `tile_map` visualisation), the
index-pattern fields (OpenSearch Dashboards 2 keeps a field list; Kibana 8
reads fields live) and the migration-version markers each product reads.

Run `python dashboards/build.py` after changing this file; the output is
committed, and a test keeps it equal to what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent / "scripts" / "schema" / "opensearch-template.json"

INDEX_PATTERN_ID = "fraudflight-transactions"
INDEX_PATTERN = "fraudflight-transactions-*"
# Live model quality: a document per model version and UTC day (`serve`,
# opensearch.quality_index).
QUALITY_TEMPLATE = HERE.parent / "scripts" / "schema" / "opensearch-quality-template.json"
QUALITY_PATTERN_ID = "fraudflight-model-quality"
QUALITY_PATTERN = "fraudflight-model-quality"
TIME_FIELD = "@timestamp"
ALERTS = "is_fraud_predicted:true"
REF = "kibanaSavedObjectMeta.searchSourceJSON.index"

# Migration markers: the versions whose formats these objects are written in
# (both products migrate an imported object up from there).
KIBANA = {
    "coreMigrationVersion": "8.8.0",
    "index-pattern": "7.11.0",
    "search": "7.9.3",
    "visualization": "7.17.0",
    "map": "8.4.0",
    "dashboard": "7.17.3",
}
OSD = {"index-pattern": "7.6.0", "search": "7.9.3", "visualization": "7.10.0", "dashboard": "7.9.3"}


def search_source(query: str = "", with_index: bool = True) -> dict:
    source: dict = {"query": {"query": query, "language": "kuery"}, "filter": []}
    if with_index:
        source["indexRefName"] = REF
    return {"searchSourceJSON": json.dumps(source)}


def index_ref(pattern_id: str = INDEX_PATTERN_ID) -> list[dict]:
    return [{"name": REF, "type": "index-pattern", "id": pattern_id}]


def agg(id_: str, type_: str, schema: str, **params) -> dict:
    return {"id": id_, "enabled": True, "type": type_, "schema": schema, "params": params}


def date_histogram(id_: str = "2") -> dict:
    return agg(id_, "date_histogram", "segment", field=TIME_FIELD, interval="1m", min_doc_count=1,
               extended_bounds={}, useNormalizedOpenSearchInterval=True, drop_partials=False)


def xy_params(kind: str, y_title: str, scale: str = "linear", horizontal: bool = False) -> dict:
    """The params of a line / bar chart with one category and one value axis."""
    category = {"id": "CategoryAxis-1", "type": "category", "position": "left" if horizontal else "bottom",
                "show": True, "scale": {"type": "linear"}, "labels": {"show": True, "truncate": 100}, "title": {}}
    value = {"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value",
             "position": "bottom" if horizontal else "left", "show": True,
             "scale": {"type": scale, "mode": "normal"}, "labels": {"show": True, "rotate": 0, "truncate": 100},
             "title": {"text": y_title}}
    series = {"show": True, "type": kind, "mode": "normal", "data": {"label": y_title, "id": "1"},
              "valueAxis": "ValueAxis-1", "drawLinesBetweenPoints": True, "showCircles": True,
              "lineWidth": 2, "interpolate": "linear"}
    return {"type": kind, "grid": {"categoryLines": False}, "categoryAxes": [category], "valueAxes": [value],
            "seriesParams": [series], "addTooltip": True, "addLegend": True, "legendPosition": "right",
            "times": [], "addTimeMarker": False, "thresholdLine": {"show": False}, "labels": {"show": False}}


def vis(id_: str, title: str, description: str, kind: str, params: dict, aggs: list[dict], query: str = "",
        with_index: bool = True, pattern_id: str = INDEX_PATTERN_ID) -> dict:
    return {
        "id": id_,
        "type": "visualization",
        "attributes": {
            "title": title,
            "description": description,
            "visState": json.dumps({"title": title, "type": kind, "params": params, "aggs": aggs}),
            "uiStateJSON": "{}",
            "version": 1,
            "kibanaSavedObjectMeta": search_source(query, with_index),
        },
        "references": index_ref(pattern_id) if with_index else [],
    }


def quality_visualisations() -> list[dict]:
    """Live quality per UTC day, a line per model version."""
    per_day = agg("2", "date_histogram", "segment", field=TIME_FIELD, interval="1d", min_doc_count=1,
                  extended_bounds={}, useNormalizedOpenSearchInterval=True, drop_partials=False)
    by_version = agg("3", "terms", "group", field="version", size=10, order="desc", orderBy="_key",
                     otherBucket=False, missingBucket=False)

    def line(id_: str, title: str, description: str, metrics: list[dict], y_title: str) -> dict:
        return vis(id_, title, description, "line", xy_params("line", y_title), [*metrics, per_day, by_version],
                   pattern_id=QUALITY_PATTERN_ID)

    ap = line("fraudflight-live-average-precision", "Live average precision per model version",
              "Average precision per UTC day of each model version's scores, judged by the labels that came back "
              "(days younger than the label delay are provisional).",
              [agg("1", "max", "metric", field="average_precision", customLabel="AP")], "average precision")
    precision_recall = line(
        "fraudflight-live-precision-recall", "Live precision and recall per model version",
        "Precision and recall at each version's threshold, per UTC day, from labels.",
        [agg("1", "max", "metric", field="precision", customLabel="precision"),
         agg("4", "max", "metric", field="recall", customLabel="recall")], "share")
    card_precision = line(
        "fraudflight-live-card-precision", "Live card precision at k per model version",
        "Of the k cards with the highest scores each UTC day (quality.card_k, 100), the share labelled fraud: "
        "what the analysts' daily budget of checks finds.",
        [agg("1", "max", "metric", field="card_precision", customLabel="card precision")], "card precision")
    psi = line("fraudflight-score-psi", "Score drift (PSI) per model version",
               "Population stability index of each day's scores against the training scores; over 0.2 is flagged.",
               [agg("1", "max", "metric", field="score_psi", customLabel="PSI")], "PSI")
    table_params = {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
                    "sort": {"columnIndex": None, "direction": None}, "showTotal": False, "totalFunc": "sum",
                    "percentageCol": ""}
    drifting = vis("fraudflight-drifting-days", "Days flagged for drift",
                   "Model versions and days whose scores or fraud rate moved away from the training data's.",
                   "table", table_params,
                   [agg("1", "count", "metric", customLabel="days"),
                    agg("2", "terms", "bucket", field="version", size=10, order="desc", orderBy="1",
                        otherBucket=False, missingBucket=False, customLabel="version"),
                    agg("3", "terms", "bucket", field="drift_reasons", size=10, order="desc", orderBy="1",
                        otherBucket=False, missingBucket=False, customLabel="why")],
                   query="drifting:true", pattern_id=QUALITY_PATTERN_ID)
    return [ap, precision_recall, card_precision, psi, drifting]


def visualisations() -> list[dict]:
    """Every visualisation both products share."""
    count = agg("1", "count", "metric")
    per_minute = vis(
        "fraudflight-transactions-per-minute", "Transactions and predicted frauds per minute",
        "All scored transactions and those predicted fraudulent, per minute (log scale).", "line",
        xy_params("line", "transactions per minute", scale="log"),
        [count, date_histogram(),
         agg("3", "filters", "group", filters=[
             {"input": {"query": "*", "language": "kuery"}, "label": "transactions"},
             {"input": {"query": ALERTS, "language": "kuery"}, "label": "predicted frauds"}])],
    )
    # The share of predicted frauds needs a ratio of two counts: TSVB's
    # filter_ratio, the one ratio both products' visualisations compute.
    fraud_rate_params = {
        "id": "fraudflight-fraud-rate", "type": "timeseries", "index_pattern": INDEX_PATTERN,
        "time_field": TIME_FIELD, "interval": "1m", "axis_position": "left", "axis_formatter": "number",
        "axis_scale": "normal", "show_legend": 1, "show_grid": 1, "tooltip_mode": "show_all",
        "default_index_pattern": INDEX_PATTERN, "default_timefield": TIME_FIELD, "isModelInvalid": False,
        # An index string, not a data-view id: the form both products read.
        "use_kibana_indexes": False,
        "series": [{
            "id": "fraud-rate", "label": "predicted fraud rate", "color": "#E7664C", "split_mode": "everything",
            "chart_type": "line", "line_width": 2, "point_size": 1, "fill": 0.2, "stacked": "none",
            "formatter": "percent", "axis_position": "right", "separate_axis": 0,
            "metrics": [{
                "id": "ratio", "type": "filter_ratio", "metric_agg": "count",
                "numerator": {"query": ALERTS, "language": "kuery"},
                "denominator": {"query": "*", "language": "kuery"},
            }],
        }],
    }
    fraud_rate = vis("fraudflight-fraud-rate", "Fraud rate over time",
                     "Predicted frauds as a share of scored transactions, per minute.", "metrics",
                     fraud_rate_params, [], with_index=False)
    score_params = xy_params("histogram", "transactions", scale="log")
    scores = vis(
        "fraudflight-score-distribution", "Fraud score distribution",
        "How many transactions got each fraud score (log scale); predicted frauds sit right of the threshold.",
        "histogram", score_params,
        [count, agg("2", "histogram", "segment", field="fraud_score", interval=0.05, min_doc_count=False,
                    has_extended_bounds=True, extended_bounds={"min": 0, "max": 1})],
    )
    amount = vis(
        "fraudflight-amount-by-category", "Amount by category, predicted frauds",
        "Total amount of predicted frauds per merchant category.", "histogram",
        xy_params("histogram", "amount (USD)"),
        [agg("1", "sum", "metric", field="amt"),
         agg("2", "terms", "segment", field="category", size=20, order="desc", orderBy="1",
             otherBucket=False, missingBucket=False)],
        query=ALERTS,
    )
    table_params = {"perPage": 10, "showPartialRows": False, "showMetricsAtAllLevels": False,
                    "sort": {"columnIndex": None, "direction": None}, "showTotal": False, "totalFunc": "sum",
                    "percentageCol": ""}
    merchants = vis(
        "fraudflight-top-merchants", "Top merchants by alerts", "Merchants with the most predicted frauds.",
        "table", table_params,
        [agg("1", "count", "metric", customLabel="alerts"),
         agg("3", "sum", "metric", field="amt", customLabel="amount (USD)"),
         agg("2", "terms", "bucket", field="merchant", size=10, order="desc", orderBy="1",
             otherBucket=False, missingBucket=False, customLabel="merchant")],
        query=ALERTS,
    )
    states = vis(
        "fraudflight-top-states", "Top states by alerts", "States with the most predicted frauds.",
        "horizontal_bar", xy_params("histogram", "alerts", horizontal=True),
        [agg("1", "count", "metric", customLabel="alerts"),
         agg("2", "terms", "segment", field="state", size=15, order="desc", orderBy="1",
             otherBucket=False, missingBucket=False)],
        query=ALERTS,
    )
    # Labels (Kafka `<topic>.labels`, Flight) set a document's `is_fraud`:
    # confirmed frauds next to predicted ones, the precision of the alerts.
    labelled = vis(
        "fraudflight-labelled-vs-predicted", "Labelled against predicted",
        "Alerts confirmed or refuted by a label, labelled frauds the model missed, alerts not labelled yet.",
        "table", table_params,
        [agg("1", "count", "metric", customLabel="transactions"),
         agg("2", "filters", "bucket", filters=[
             {"input": {"query": f"{ALERTS} and is_fraud:1", "language": "kuery"}, "label": "alert, labelled fraud"},
             {"input": {"query": f"{ALERTS} and is_fraud:0", "language": "kuery"},
              "label": "alert, labelled genuine"},
             {"input": {"query": "is_fraud_predicted:false and is_fraud:1", "language": "kuery"},
              "label": "no alert, labelled fraud (missed)"},
             {"input": {"query": f"{ALERTS} and not is_fraud:*", "language": "kuery"}, "label": "alert, no label yet"},
         ])],
    )
    precision_params = {
        **fraud_rate_params, "id": "fraudflight-alert-precision",
        "series": [{
            **fraud_rate_params["series"][0], "id": "precision", "label": "labelled alerts confirmed as fraud",
            "color": "#54B399",
            "metrics": [{
                "id": "ratio", "type": "filter_ratio", "metric_agg": "count",
                "numerator": {"query": f"{ALERTS} and is_fraud:1", "language": "kuery"},
                "denominator": {"query": f"{ALERTS} and is_fraud:*", "language": "kuery"},
            }],
        }],
    }
    precision = vis("fraudflight-alert-precision", "Precision of labelled alerts",
                    "Of the alerts with a label, the share labelled fraud, per minute.", "metrics",
                    precision_params, [], with_index=False)
    return [per_minute, fraud_rate, scores, amount, merchants, states, labelled, precision]


def latest_alerts() -> dict:
    return {
        "id": "fraudflight-latest-alerts",
        "type": "search",
        "attributes": {
            "title": "Latest alerts",
            "description": "Predicted frauds, newest first, with their label and the card's and merchant's history.",
            "columns": ["amt", "category", "merchant", "city", "state", "distance_km", "fraud_score",
                        "model_version", "is_fraud", "card_tx_1d", "card_amt_ratio_30d", "card_secs_since_prev",
                        "card_km_from_prev", "merch_fraud_rate_30d"],
            "sort": [[TIME_FIELD, "desc"]],
            "version": 1,
            "kibanaSavedObjectMeta": search_source(ALERTS),
        },
        "references": index_ref(),
    }


def kibana_map() -> dict:
    """Kibana 8's alert map: a Maps app object with a documents layer on the
    merchant location (no base layer: it would need Elastic's map service)."""
    layer = {
        "id": "fraudflight-alerts-layer", "label": "Predicted frauds (merchant location)", "type": "GEOJSON_VECTOR",
        "visible": True, "minZoom": 0, "maxZoom": 24, "alpha": 0.85,
        "sourceDescriptor": {
            "type": "ES_SEARCH", "id": "fraudflight-alerts-source", "geoField": "location",
            "scalingType": "LIMIT", "sortField": TIME_FIELD, "sortOrder": "desc",
            "tooltipProperties": ["merchant", "category", "amt", "fraud_score"],
            "indexPatternRefName": "layer_0_source_index_pattern",
        },
        "query": {"query": ALERTS, "language": "kuery"},
        "style": {"type": "VECTOR", "properties": {
            "fillColor": {"type": "STATIC", "options": {"color": "#E7664C"}},
            "lineColor": {"type": "STATIC", "options": {"color": "#FFFFFF"}},
            "iconSize": {"type": "DYNAMIC", "options": {"field": {"name": "amt", "origin": "source"},
                                                         "minSize": 4, "maxSize": 16}},
        }},
    }
    state = {"zoom": 3.3, "center": {"lon": -96.0, "lat": 38.5}, "timeFilters": {"from": "now-15m", "to": "now"},
             "refreshConfig": {"isPaused": False, "interval": 10000},
             "query": {"query": "", "language": "kuery"}, "filters": []}
    return {
        "id": "fraudflight-alert-map",
        "type": "map",
        "attributes": {
            "title": "Map of predicted frauds",
            "description": "Where predicted frauds happen: merchant locations, sized by amount.",
            "layerListJSON": json.dumps([layer]),
            "mapStateJSON": json.dumps(state),
            "uiStateJSON": json.dumps({"isLayerTOCOpen": True, "openTOCDetails": []}),
        },
        "references": [{"name": "layer_0_source_index_pattern", "type": "index-pattern", "id": INDEX_PATTERN_ID}],
    }


def osd_map() -> dict:
    """OpenSearch Dashboards' alert map: a coordinate map of the merchant
    location of predicted frauds."""
    params = {"mapType": "Scaled Circle Markers", "isDesaturated": True, "addTooltip": True,
              "heatClusterSize": 1.5, "legendPosition": "bottomright", "mapZoom": 4, "mapCenter": [38.5, -96.0],
              "colorSchema": "Reds", "wms": {"enabled": False, "options": {"format": "image/png", "transparent": True}}}
    return vis(
        "fraudflight-alert-map", "Map of predicted frauds", "Where predicted frauds happen: merchant locations.",
        "tile_map", params,
        [agg("1", "count", "metric"),
         agg("2", "geohash_grid", "segment", field="location", autoPrecision=True, isFilteredByCollar=True,
             useGeocentroid=True, mapZoom=4, mapCenter=[38.5, -96.0], precision=3)],
        query=ALERTS,
    )


# (object id, type, x, y, w, h) on the 48-column dashboard grid.
LAYOUT = [
    ("fraudflight-transactions-per-minute", "visualization", 0, 0, 24, 13),
    ("fraudflight-fraud-rate", "visualization", 24, 0, 24, 13),
    ("fraudflight-alert-map", None, 0, 13, 30, 22),
    ("fraudflight-score-distribution", "visualization", 30, 13, 18, 11),
    ("fraudflight-amount-by-category", "visualization", 30, 24, 18, 11),
    ("fraudflight-top-merchants", "visualization", 0, 35, 24, 15),
    ("fraudflight-top-states", "visualization", 24, 35, 24, 15),
    ("fraudflight-labelled-vs-predicted", "visualization", 0, 50, 24, 13),
    ("fraudflight-alert-precision", "visualization", 24, 50, 24, 13),
    ("fraudflight-latest-alerts", "search", 0, 63, 48, 18),
]


QUALITY_LAYOUT = [
    ("fraudflight-live-average-precision", "visualization", 0, 0, 24, 15),
    ("fraudflight-live-precision-recall", "visualization", 24, 0, 24, 15),
    ("fraudflight-live-card-precision", "visualization", 0, 15, 24, 15),
    ("fraudflight-score-psi", "visualization", 24, 15, 24, 15),
    ("fraudflight-drifting-days", "visualization", 0, 30, 48, 13),
]


def quality_dashboard(panel_version: str) -> dict:
    board = dashboard("visualization", panel_version, QUALITY_LAYOUT)
    board["id"] = "fraudflight-model-quality-dashboard"
    board["attributes"].update(
        title="Model quality",
        description="fraudflight: live precision, recall, AP and card precision at k per model version and UTC "
        "day, from labels; drift.",
        timeFrom="now-90d",
        refreshInterval={"pause": False, "value": 60000},
    )
    return board


def dashboard(map_type: str, panel_version: str, layout: list = LAYOUT) -> dict:
    panels, references = [], []
    for i, (id_, kind, x, y, w, h) in enumerate(layout):
        kind = kind or map_type
        panels.append({"version": panel_version, "type": kind, "panelIndex": str(i + 1),
                       "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i + 1)},
                       "embeddableConfig": {}, "panelRefName": f"panel_{i}"})
        references.append({"name": f"panel_{i}", "type": kind, "id": id_})
    return {
        "id": "fraudflight-fraud-overview",
        "type": "dashboard",
        "attributes": {
            "title": "Fraud overview",
            "description": "fraudflight: scored transactions, predicted frauds and where they happen, live.",
            "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": True, "timeFrom": "now-15m", "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 10000},
            "version": 1,
            "kibanaSavedObjectMeta": search_source(with_index=False),
        },
        "references": references,
    }


def index_pattern(with_fields: bool, pattern_id: str = INDEX_PATTERN_ID, title: str = INDEX_PATTERN,
                  template: Path = TEMPLATE) -> dict:
    fields = "[]"
    if with_fields:
        fields = json.dumps(osd_fields(template))
    return {
        "id": pattern_id,
        "type": "index-pattern",
        "attributes": {"title": title, "timeFieldName": TIME_FIELD, "fields": fields},
        "references": [],
    }


KIND_OF = {"keyword": "string", "text": "string", "date": "date", "boolean": "boolean", "geo_point": "geo_point",
           **{t: "number" for t in ("long", "integer", "short", "byte", "double", "float", "half_float")}}


def osd_fields(template: Path = TEMPLATE) -> list[dict]:
    """OpenSearch Dashboards 2's cached field list, from the index template."""
    mapping = json.loads(template.read_text())["template"]["mappings"]["properties"]
    fields = []
    for name, spec in sorted(mapping.items()):
        indexed = spec.get("index", True)
        fields.append({"name": name, "type": KIND_OF[spec["type"]], "esTypes": [spec["type"]], "count": 0,
                       "scripted": False, "searchable": indexed, "aggregatable": True, "readFromDocValues": True})
    for meta, kind in (("_id", "string"), ("_index", "string"), ("_score", "number"), ("_source", "_source")):
        fields.append({"name": meta, "type": kind, "esTypes": [meta], "count": 0, "scripted": False,
                       "searchable": meta != "_source", "aggregatable": meta in ("_id", "_index"),
                       "readFromDocValues": False})
    return fields


def with_versions(obj: dict, product: str) -> dict:
    if product == "kibana":
        return {**obj, "coreMigrationVersion": KIBANA["coreMigrationVersion"],
                "typeMigrationVersion": KIBANA[obj["type"]]}
    return {**obj, "migrationVersion": {obj["type"]: OSD[obj["type"]]}}


def objects(product: str, board: str = "fraud-overview") -> list[dict]:
    """Every saved object of one dashboard (`board`: "fraud-overview" or
    "model-quality") for `product` ("kibana" or "opensearch-dashboards"),
    referenced objects before those that reference them."""
    kibana = product == "kibana"
    panel_version = "8.15.0" if kibana else "2.19.0"
    if board == "model-quality":
        pattern = index_pattern(not kibana, QUALITY_PATTERN_ID, QUALITY_PATTERN, QUALITY_TEMPLATE)
        shared = [pattern, *quality_visualisations(), quality_dashboard(panel_version)]
    else:
        shared = [index_pattern(with_fields=not kibana), *visualisations(), latest_alerts(),
                  kibana_map() if kibana else osd_map(),
                  dashboard("map" if kibana else "visualization", panel_version)]
    return [with_versions(o, product) for o in shared]


PRODUCTS = ("kibana", "opensearch-dashboards")
BOARDS = ("fraud-overview", "model-quality")


def render(product: str, board: str = "fraud-overview") -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects(product, board))


def main() -> None:
    for product in PRODUCTS:
        for board in BOARDS:
            path = HERE / product / f"{board}.ndjson"
            path.parent.mkdir(exist_ok=True)
            path.write_text(render(product, board))
            print(f"wrote {path.relative_to(HERE.parent)} ({len(objects(product, board))} objects)")


if __name__ == "__main__":
    main()
