#!/usr/bin/env python3
"""Checks the saved objects under dashboards/ without Kibana or OpenSearch
Dashboards (neither runs on a machine without Docker):

- every file is NDJSON: one JSON object per line with `id`, `type` and
  `attributes`, and every JSON-in-a-string attribute parses;
- every reference resolves to an object of the same file set, every
  reference name an object uses (`indexRefName`, `panelRefName`,
  `indexPatternRefName`) is declared, and no declared reference is unused;
- every field a visualisation, search, map or index pattern uses exists in
  the index its index pattern names, with a type that use accepts: against
  the index templates (offline), or against a live cluster's `_field_caps`
  (`--opensearch URL`; `--index` for the transactions, `--quality-index`
  for live model quality).

    python dashboards/check.py [--opensearch URL [--index PATTERN] [--quality-index NAME]]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent / "scripts" / "schema" / "opensearch-template.json"
QUALITY_TEMPLATE = HERE.parent / "scripts" / "schema" / "opensearch-quality-template.json"
# Index pattern id -> the template of the index it names.
TRANSACTIONS, QUALITY = "fraudflight-transactions", "fraudflight-model-quality"
TEMPLATES = {TRANSACTIONS: TEMPLATE, QUALITY: QUALITY_TEMPLATE}
PRODUCTS = ("kibana", "opensearch-dashboards")

NUMERIC = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"})
DATE = frozenset({"date", "date_nanos"})
GEO = frozenset({"geo_point"})
TERMS = NUMERIC | {"keyword", "boolean", "ip"}
SORTABLE = NUMERIC | DATE | {"keyword", "boolean"}
ANY = frozenset()  # any type: the field must only exist

# Which field types each aggregation accepts (as Kibana's and OpenSearch
# Dashboards' aggregation editors filter them).
AGG_TYPES = {
    "date_histogram": DATE,
    "histogram": NUMERIC,
    "range": NUMERIC,
    "sum": NUMERIC,
    "avg": NUMERIC,
    "min": NUMERIC | DATE,
    "max": NUMERIC | DATE,
    "median": NUMERIC,
    "percentiles": NUMERIC,
    "cardinality": TERMS,
    "terms": TERMS,
    "significant_terms": TERMS,
    "geohash_grid": GEO,
    "geotile_grid": GEO,
    "geo_centroid": GEO,
    "geo_bounds": GEO,
}
# Attributes that hold JSON in a string.
JSON_STRINGS = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "layerListJSON", "mapStateJSON", "fields")


class CheckError(Exception):
    """A saved-object file that cannot be read at all."""


@dataclass(frozen=True)
class Use:
    """One use of an index field by a saved object."""

    object_id: str
    what: str
    field: str
    accepts: frozenset[str]
    aggregatable: bool = False
    # The index pattern (id) whose index must have the field.
    pattern: str = TRANSACTIONS


@dataclass(frozen=True)
class Field:
    types: frozenset[str]
    aggregatable: bool


def load(path: Path) -> list[dict]:
    """The objects of one NDJSON file; CheckError names the bad line."""
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CheckError(f"{path.name} line {number}: not JSON: {e}") from None
        if not isinstance(obj, dict) or not {"id", "type", "attributes"} <= obj.keys():
            raise CheckError(f"{path.name} line {number}: a saved object needs id, type and attributes")
        for key in JSON_STRINGS:
            if key in obj["attributes"]:
                try:
                    json.loads(obj["attributes"][key])
                except (TypeError, json.JSONDecodeError) as e:
                    raise CheckError(f"{path.name} line {number}: attribute {key} is not JSON: {e}") from None
        source = obj["attributes"].get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
        if source is not None:
            try:
                json.loads(source)
            except (TypeError, json.JSONDecodeError) as e:
                raise CheckError(f"{path.name} line {number}: searchSourceJSON is not JSON: {e}") from None
        objects.append(obj)
    if not objects:
        raise CheckError(f"{path.name}: no saved objects")
    return objects


def load_product(product: str) -> list[dict]:
    files = sorted((HERE / product).glob("*.ndjson"))
    if not files:
        raise CheckError(f"no .ndjson files under dashboards/{product}")
    return [o for f in files for o in load(f)]


def used_reference_names(obj: dict) -> set[str]:
    """Reference names the object's attributes point at."""
    attrs = obj["attributes"]
    names = set()
    source = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON")
    if source:
        ref = json.loads(source).get("indexRefName")
        if ref:
            names.add(ref)
    for panel in json.loads(attrs.get("panelsJSON", "[]")):
        if "panelRefName" in panel:
            names.add(panel["panelRefName"])
    for layer in json.loads(attrs.get("layerListJSON", "[]")):
        ref = layer.get("sourceDescriptor", {}).get("indexPatternRefName")
        if ref:
            names.add(ref)
    return names


def reference_problems(objects: list[dict]) -> list[str]:
    problems = []
    known = {(o["type"], o["id"]) for o in objects}
    ids = [(o["type"], o["id"]) for o in objects]
    for duplicate in {i for i in ids if ids.count(i) > 1}:
        problems.append(f"{duplicate[0]} {duplicate[1]} is defined twice")
    for obj in objects:
        declared = {}
        for ref in obj.get("references", []):
            if (ref["type"], ref["id"]) not in known:
                problems.append(f"{obj['id']}: reference {ref['name']} -> {ref['type']} {ref['id']} is not in the files")
            declared[ref["name"]] = ref
        used = used_reference_names(obj)
        for name in sorted(used - declared.keys()):
            problems.append(f"{obj['id']}: uses reference {name}, which it does not declare")
        for name in sorted(declared.keys() - used):
            problems.append(f"{obj['id']}: declares reference {name}, which nothing uses")
        # A panel's type must be the type of the object it references.
        for panel in json.loads(obj["attributes"].get("panelsJSON", "[]")):
            ref = declared.get(panel.get("panelRefName"))
            if ref and panel.get("type") and panel["type"] != ref["type"]:
                problems.append(f"{obj['id']}: panel {panel['panelIndex']} is a {panel['type']} "
                                f"but references a {ref['type']}")
    return problems


QUERY_FIELD = re.compile(r"(?<![\w.@])([@\w.]+)\s*:")


def query_fields(query: str) -> list[str]:
    """Fields named in a KQL / Lucene query (`field:value`)."""
    return [f for f in QUERY_FIELD.findall(query) if f != "*"]


def pattern_of(obj: dict, by_title: dict[str, str]) -> str:
    """The id of the index pattern an object reads (TSVB names it by title)."""
    if obj["type"] == "index-pattern":
        return obj["id"]
    for ref in obj.get("references", []):
        if ref["type"] == "index-pattern":
            return ref["id"]
    if obj["type"] == "visualization":
        title = json.loads(obj["attributes"]["visState"]).get("params", {}).get("index_pattern")
        if title in by_title:
            return by_title[title]
    return TRANSACTIONS


def field_uses(objects: list[dict]) -> list[Use]:
    """Every field the objects use, with the types each use accepts."""
    by_title = {o["attributes"]["title"]: o["id"] for o in objects if o["type"] == "index-pattern"}
    uses: list[Use] = []
    for obj in objects:
        start = len(uses)
        oid, attrs = obj["id"], obj["attributes"]
        source = json.loads(attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON") or "{}")
        for f in query_fields(source.get("query", {}).get("query", "")):
            uses.append(Use(oid, "query", f, ANY))
        if obj["type"] == "index-pattern":
            uses.append(Use(oid, "time field", attrs["timeFieldName"], DATE, aggregatable=True))
            for cached in json.loads(attrs.get("fields", "[]")):
                if not cached["name"].startswith("_"):
                    uses.append(Use(oid, "cached field", cached["name"], frozenset(cached["esTypes"])))
        elif obj["type"] == "search":
            for column in attrs.get("columns", []):
                uses.append(Use(oid, "column", column, ANY))
            for field, _ in attrs.get("sort", []):
                uses.append(Use(oid, "sort", field, SORTABLE, aggregatable=True))
        elif obj["type"] == "visualization":
            state = json.loads(attrs["visState"])
            for a in state.get("aggs", []):
                params = a.get("params", {})
                if "field" in params:
                    accepts = AGG_TYPES.get(a["type"])
                    if accepts is None:
                        raise CheckError(f"{oid}: aggregation {a['type']} is not known to this checker")
                    uses.append(Use(oid, f"{a['type']} aggregation", params["field"], accepts, aggregatable=True))
                for flt in params.get("filters", []):
                    for f in query_fields(flt.get("input", {}).get("query", "")):
                        uses.append(Use(oid, "filters aggregation", f, ANY))
            if state["type"] == "metrics":  # TSVB
                p = state["params"]
                uses.append(Use(oid, "TSVB time field", p["time_field"], DATE, aggregatable=True))
                for series in p.get("series", []):
                    for metric in series.get("metrics", []):
                        if metric.get("field"):
                            uses.append(Use(oid, f"TSVB {metric['type']}", metric["field"], NUMERIC, True))
                        for side in ("numerator", "denominator"):
                            query = metric.get(side) or {}
                            text = query.get("query", "") if isinstance(query, dict) else query
                            for f in query_fields(text):
                                uses.append(Use(oid, f"TSVB {side}", f, ANY))
        elif obj["type"] == "map":
            for layer in json.loads(attrs["layerListJSON"]):
                src = layer.get("sourceDescriptor", {})
                if src.get("geoField"):
                    uses.append(Use(oid, "map layer geo field", src["geoField"], GEO, aggregatable=True))
                if src.get("sortField"):
                    uses.append(Use(oid, "map layer sort", src["sortField"], SORTABLE, aggregatable=True))
                for f in src.get("tooltipProperties", []):
                    uses.append(Use(oid, "map tooltip", f, ANY))
                for f in query_fields((layer.get("query") or {}).get("query", "")):
                    uses.append(Use(oid, "map layer query", f, ANY))
                for prop in layer.get("style", {}).get("properties", {}).values():
                    field = prop.get("options", {}).get("field")
                    if prop.get("type") == "DYNAMIC" and field:
                        uses.append(Use(oid, "map style", field["name"], NUMERIC, aggregatable=True))
        pattern = pattern_of(obj, by_title)
        uses[start:] = [Use(u.object_id, u.what, u.field, u.accepts, u.aggregatable, pattern) for u in uses[start:]]
    return uses


def template_fields(template: Path = TEMPLATE) -> dict[str, Field]:
    """Field types as the index template maps them."""
    mapping = json.loads(template.read_text())["template"]["mappings"]["properties"]
    return {name: Field(frozenset({spec["type"]}), spec.get("doc_values", True)) for name, spec in mapping.items()}


def pattern_fields() -> dict[str, dict[str, Field]]:
    """Every index pattern's fields as its template maps them."""
    return {pattern: template_fields(path) for pattern, path in TEMPLATES.items()}


def field_caps(url: str, index: str) -> dict[str, Field]:
    """Field types as a live cluster reports them (`_field_caps`)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/{index}/_field_caps?fields=*", timeout=30) as response:
            caps = json.loads(response.read())["fields"]
    except urllib.error.HTTPError as e:
        raise CheckError(f"{url} cannot give the fields of {index}: HTTP {e.code} (does the index exist?)") from None
    return {
        name: Field(frozenset(by_type), all(c.get("aggregatable", False) for c in by_type.values()))
        for name, by_type in caps.items()
        if not name.startswith("_")
    }


def field_problems(uses: list[Use], fields: dict[str, dict[str, Field]]) -> list[str]:
    """Problems of `uses` against each index pattern's `fields`."""
    problems = []
    for use in uses:
        if use.pattern not in fields:
            problems.append(f"{use.object_id}: reads index pattern {use.pattern}, whose fields are not known")
            continue
        found = fields[use.pattern].get(use.field)
        if found is None:
            problems.append(f"{use.object_id}: {use.what} uses field {use.field}, which the index does not have")
        elif use.accepts and not found.types <= use.accepts:
            problems.append(f"{use.object_id}: {use.what} on {use.field} needs one of {sorted(use.accepts)}, "
                            f"the index has {sorted(found.types)}")
        elif use.aggregatable and not found.aggregatable:
            problems.append(f"{use.object_id}: {use.what} on {use.field} needs an aggregatable field")
    return problems


def check(fields: dict[str, dict[str, Field]] | None = None) -> list[str]:
    """Every problem of every product's files; `fields` (per index pattern)
    defaults to the templates'."""
    fields = fields if fields is not None else pattern_fields()
    problems = []
    for product in PRODUCTS:
        objects = load_product(product)
        problems += [f"{product}: {p}" for p in reference_problems(objects)]
        problems += [f"{product}: {p}" for p in field_problems(field_uses(objects), fields)]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opensearch", help="check fields against this cluster's _field_caps")
    parser.add_argument("--index", default="fraudflight-transactions-*", help="transactions index pattern for _field_caps")
    parser.add_argument("--quality-index", default="fraudflight-model-quality", help="live quality index for _field_caps")
    args = parser.parse_args()
    try:
        fields = None
        if args.opensearch:
            fields = {TRANSACTIONS: field_caps(args.opensearch, args.index),
                      QUALITY: field_caps(args.opensearch, args.quality_index)}
        problems = check(fields)
    except CheckError as e:
        print(f"check: {e}", file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{'FAILED' if problems else 'ok'}: {len(problems)} problem(s) in {', '.join(PRODUCTS)} saved objects")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
