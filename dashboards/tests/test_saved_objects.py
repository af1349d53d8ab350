"""The saved objects for Kibana 8 and OpenSearch Dashboards 2, checked
offline (the live `_field_caps` check is tests/dashboards_field_caps.rs):
valid NDJSON, references that resolve, fields that exist in the index
template with accepted types, every panel the issue asks for, and the
committed files equal to what dashboards/build.py writes. The negative cases
show each check can fail."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import build
import check
import pytest

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(params=check.PRODUCTS)
def product(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("board", build.BOARDS)
def test_committed_files_are_what_build_writes(product: str, board: str) -> None:
    committed = (HERE / product / f"{board}.ndjson").read_text()
    assert committed == build.render(product, board), "run `python dashboards/build.py` and commit the result"


def test_every_file_is_ndjson_of_saved_objects(product: str) -> None:
    objects = check.load_product(product)
    assert {o["type"] for o in objects} >= {"index-pattern", "visualization", "search", "dashboard"}


def test_every_reference_resolves_and_every_field_fits_the_template(product: str) -> None:
    objects = check.load_product(product)
    assert check.reference_problems(objects) == []
    uses = check.field_uses(objects)
    assert len(uses) > 20
    assert check.field_problems(uses, check.pattern_fields()) == []
    # The quality objects read the quality index, the others the transactions.
    assert {u.pattern for u in uses if u.object_id.startswith("fraudflight-live-")} == {check.QUALITY}
    assert {u.pattern for u in uses if u.object_id == "fraudflight-top-merchants"} == {check.TRANSACTIONS}


def panels(product: str, board_id: str = "fraudflight-fraud-overview") -> dict[str, dict]:
    """A dashboard's panels: referenced object id -> object."""
    objects = check.load_product(product)
    by_id = {o["id"]: o for o in objects}
    board = next(o for o in objects if o["id"] == board_id)
    return {r["id"]: by_id[r["id"]] for r in board["references"]}


def aggs(obj: dict) -> list[dict]:
    return json.loads(obj["attributes"]["visState"]).get("aggs", [])


def query(obj: dict) -> str:
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]


def test_the_dashboard_has_every_panel_asked_for(product: str) -> None:
    p = panels(product)
    per_minute = p["fraudflight-transactions-per-minute"]
    assert {(a["type"], a["params"].get("field")) for a in aggs(per_minute)} >= {("date_histogram", "@timestamp")}
    labels = [f["label"] for a in aggs(per_minute) if a["type"] == "filters" for f in a["params"]["filters"]]
    assert labels == ["transactions", "predicted frauds"]

    rate = json.loads(p["fraudflight-fraud-rate"]["attributes"]["visState"])
    assert rate["type"] == "metrics"
    assert rate["params"]["series"][0]["metrics"][0]["type"] == "filter_ratio"

    scores = aggs(p["fraudflight-score-distribution"])
    assert ("histogram", "fraud_score") in {(a["type"], a["params"].get("field")) for a in scores}

    amount = p["fraudflight-amount-by-category"]
    assert {(a["type"], a["params"].get("field")) for a in aggs(amount)} == {("sum", "amt"), ("terms", "category")}
    assert query(amount) == "is_fraud_predicted:true"

    for vis_id, field in (("fraudflight-top-merchants", "merchant"), ("fraudflight-top-states", "state")):
        assert ("terms", field) in {(a["type"], a["params"].get("field")) for a in aggs(p[vis_id])}
        assert query(p[vis_id]) == "is_fraud_predicted:true"

    alert_map = p["fraudflight-alert-map"]
    if product == "kibana":
        layer = json.loads(alert_map["attributes"]["layerListJSON"])[0]
        assert layer["sourceDescriptor"]["geoField"] == "location"
        assert layer["query"]["query"] == "is_fraud_predicted:true"
    else:
        assert ("geohash_grid", "location") in {(a["type"], a["params"].get("field")) for a in aggs(alert_map)}
        assert query(alert_map) == "is_fraud_predicted:true"

    latest = p["fraudflight-latest-alerts"]
    assert latest["type"] == "search"
    assert latest["attributes"]["sort"] == [["@timestamp", "desc"]]
    assert query(latest) == "is_fraud_predicted:true"


def test_the_quality_dashboard_charts_each_version_per_day(product: str) -> None:
    p = panels(product, "fraudflight-model-quality-dashboard")
    for vis_id, measures in (("fraudflight-live-average-precision", {"average_precision"}),
                             ("fraudflight-live-precision-recall", {"precision", "recall"}),
                             ("fraudflight-live-card-precision", {"card_precision"}),
                             ("fraudflight-score-psi", {"score_psi"})):
        used = {(a["type"], a["params"].get("field")) for a in aggs(p[vis_id])}
        assert {("max", m) for m in measures} | {("date_histogram", "@timestamp"), ("terms", "version")} <= used
    assert query(p["fraudflight-drifting-days"]) == "drifting:true"


def test_the_index_patterns_are_on_timestamp(product: str) -> None:
    patterns = {o["attributes"]["title"]: o for o in check.load_product(product) if o["type"] == "index-pattern"}
    assert set(patterns) == {"fraudflight-transactions-*", "fraudflight-model-quality"}
    assert all(p["attributes"]["timeFieldName"] == "@timestamp" for p in patterns.values())


# --- each check can fail ---------------------------------------------------


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    good = (HERE / "kibana" / "fraud-overview.ndjson").read_text().splitlines()
    bad.write_text("\n".join([good[0], "{not json", *good[1:]]) + "\n")
    with pytest.raises(check.CheckError, match="line 2: not JSON"):
        check.load(bad)
    nested = json.loads(good[1])
    nested["attributes"]["visState"] = "{broken"
    bad.write_text(json.dumps(nested) + "\n")
    with pytest.raises(check.CheckError, match="visState is not JSON"):
        check.load(bad)


def test_a_dangling_or_undeclared_reference_is_found() -> None:
    objects = copy.deepcopy(check.load_product("kibana"))
    board = next(o for o in objects if o["type"] == "dashboard")
    board["references"][0]["id"] = "no-such-visualisation"
    objects = [o for o in objects if o["id"] != "fraudflight-top-states"]
    problems = check.reference_problems(objects)
    assert any("no-such-visualisation is not in the files" in p for p in problems)
    assert any("fraudflight-top-states is not in the files" in p for p in problems)
    search = next(o for o in objects if o["type"] == "search")
    search["references"] = []
    assert any("uses reference kibanaSavedObjectMeta.searchSourceJSON.index" in p
               for p in check.reference_problems(objects))


def test_a_missing_field_or_a_wrong_type_is_found() -> None:
    uses = check.field_uses(check.load_product("opensearch-dashboards"))
    patterns = check.pattern_fields()
    fields = patterns[check.TRANSACTIONS]
    fields.pop("merchant")
    fields["fraud_score"] = check.Field(frozenset({"keyword"}), True)
    fields["@timestamp"] = check.Field(frozenset({"long"}), True)
    patterns[check.QUALITY].pop("average_precision")
    problems = check.field_problems(uses, patterns)
    assert any("max aggregation uses field average_precision, which the index does not have" in p for p in problems)
    assert any("field merchant, which the index does not have" in p for p in problems)
    assert any("histogram aggregation on fraud_score needs one of" in p for p in problems)
    assert any("time field on @timestamp needs one of ['date', 'date_nanos']" in p for p in problems)


def test_the_import_script_is_valid_posix_sh() -> None:
    script = HERE.parent / "scripts" / "import-dashboards.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    usage = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: import-dashboards.sh URL" in usage.stderr
