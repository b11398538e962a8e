"""deploy/prometheus and deploy/grafana: the alert rules pass promtool's checks and unit tests,
every alert fires in a test and has a runbook, and every metric (and label) the rules and the
dashboard query is one the service exports (kai_inventory/metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from kai_inventory import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "kai-inventory.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

REQUIRED_ALERTS = {
    "KaiHoldErrorRateHigh",
    "KaiHoldLatencyP99High",
    "KaiRedisUnavailable",
    "KaiPostgresUnavailable",
    "KaiReaperFallingBehind",
    "KaiWebSocketPushLagHigh",
    "KaiWebSocketSlowClientClosesSpike",
    "KaiRedisRebuildInProgress",
    "KaiSaleQueueStalled",
}
# Labels Prometheus adds when it scrapes a pod (kubernetes_sd relabelling), beside the service's.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container"}
# Read from Redis at scrape time: every pod exports the same value (docs/OPERATIONS.md).
GLOBAL_METRICS = {"kai_inventory_holds_live", "kai_inventory_holds_expired_total"}
DASHBOARD_SECTIONS = {"Sales", "Holds", "Latency", "WebSockets", "Redis", "Postgres"}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log2",
    "log10", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
    "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time",
    "time", "timestamp", "vector", "year",
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan"}  # fmt: skip

IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"


# --- PromQL inspection ----------------------------------------------------------------------


def _mask_strings(expr: str) -> tuple[str, list[str]]:
    strings: list[str] = []

    def keep(match: re.Match[str]) -> str:
        strings.append(match.group(0))
        return f'"S{len(strings) - 1}"'

    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', keep, expr), strings


def _normalise(expr: str) -> str:
    masked, _ = _mask_strings(expr)
    masked = re.sub(r"\$\{?\w+\}?", "", masked)  # Grafana variables ($__rate_interval, ...)
    masked = re.sub(r"\[[^\]]*\]", "", masked)  # range and subquery selectors
    return masked


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads. Raises on a call to an unknown function."""
    text = _normalise(expr)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r'"S\d+"', "", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[smhdwy]*", "", text)
    names: set[str] = set()
    for match in re.finditer(rf"({IDENT})\s*(\()?", text):
        token, call = match.group(1), match.group(2)
        if call:
            assert token in PROMQL_FUNCTIONS | {"by", "without"}, f"unknown function {token}"
        elif token.lower() not in PROMQL_KEYWORDS:
            names.add(token)
    return names


def label_matchers(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher written in a selector."""
    found: list[tuple[str, str]] = []
    for match in re.finditer(rf"({IDENT})\s*\{{([^{{}}]*)\}}", _normalise(expr)):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(2)):
            found.append((match.group(1), label))
    return found


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", _normalise(expr)):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    return labels


# --- what the service exports ---------------------------------------------------------------


def exported_labels() -> dict[str, set[str]]:
    """Every sample name the service exports -> the label names it carries."""
    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    result: dict[str, set[str]] = {}
    # counters read from Redis at scrape time (metrics.GlobalCounter): no labels
    for value in vars(metrics).values():
        if isinstance(value, metrics.GlobalCounter):
            result[f"{value.name}_total"] = set()
    for wrapper in wrappers:
        (family,) = wrapper.describe()
        labels = set(wrapper._labelnames)
        if family.type == "histogram":
            result[f"{family.name}_bucket"] = labels | {"le"}
            result[f"{family.name}_sum"] = labels
            result[f"{family.name}_count"] = labels
        elif family.type == "counter":
            result[f"{family.name}_total"] = labels
        else:
            result[family.name] = labels
    return result


def recording_rules() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_expressions() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(<selector>, <label>): the selector is PromQL, the label must exist
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
            assert match, f"unsupported variable query {text}"
            assert match.group(2) in TARGET_LABELS | set().union(*exported_labels().values())
            exprs.append(match.group(1))
    return exprs


# --- promtool --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path, installing it (Debian package prometheus) when absent."""
    found = shutil.which("promtool")
    if found is None:
        install = subprocess.run(
            [str(ROOT / "scripts" / "ensure-tools.sh"), "promtool"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        found = shutil.which("promtool")
        if found is None:
            pytest.skip(
                "promtool is not installed and scripts/ensure-tools.sh could not install it: "
                + (install.stderr.strip() or install.stdout.strip())[-500:]
            )
    return found


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_catch_an_alert_that_no_longer_fires(
    promtool: str, tmp_path: Path
) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "KaiReaperFallingBehind":
                rule["expr"] = "max(kai_inventory_reaper_lag_seconds) > 3600"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    for test_file in RULE_TESTS:
        (tmp_path / "tests" / test_file.name).write_text(test_file.read_text())
    result = subprocess.run(
        [promtool, "test", "rules", *(str(tmp_path / "tests" / t.name) for t in RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "KaiReaperFallingBehind" in result.stdout + result.stderr


# --- rules and runbooks ----------------------------------------------------------------------


def test_required_alerts_are_defined_with_severity_and_runbook() -> None:
    alerts = alert_rules()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{rule['alert'].lower()}"


def test_every_alert_has_a_runbook_entry_in_operations_doc() -> None:
    headings = {
        line.lstrip("#").strip().split()[0].lower()
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("### ")
    }
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook"].partition("#")[2]
        assert anchor in headings, f"docs/OPERATIONS.md needs a '### {rule['alert']}' entry"


def test_every_alert_has_a_firing_case_and_a_quiet_case_in_the_unit_tests() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never seen firing in tests"
    assert names - quiet == set(), "alerts never seen staying quiet in tests"


# --- metric names ------------------------------------------------------------------------------


def test_metric_name_extraction_sees_every_series_and_ignores_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(kai_inventory_x_bucket{route="/v1/'
        '{id}", namespace=~"$namespace"}[$__rate_interval]))) > 1e-3 and on (pod) up offset 5m'
        " / ignoring(a) other:rule"
    )
    assert metric_names(expr) == {"kai_inventory_x_bucket", "up", "other:rule"}
    assert label_matchers(expr) == [
        ("kai_inventory_x_bucket", "route"),
        ("kai_inventory_x_bucket", "namespace"),
    ]
    assert grouping_labels(expr) == {"le", "route"}
    with pytest.raises(AssertionError, match="unknown function"):
        metric_names("no_such_function(kai_inventory_holds_total)")


def test_exported_label_map_covers_the_whole_registry() -> None:
    exported = metrics.exported_names()
    mapped = set(exported_labels())
    assert mapped <= exported
    # every family is mapped; what remains are family names and prometheus_client's _created
    for name in exported - mapped:
        assert name.endswith("_created") or any(m.startswith(name) for m in mapped), name


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_every_metric_queried_is_one_the_service_exports(source: str) -> None:
    exprs = rule_expressions() if source == "alert rules" else dashboard_expressions()
    assert exprs
    exported = metrics.exported_names()
    allowed = set(exported_labels()) | recording_rules()
    queried = set().union(*(metric_names(e) for e in exprs))
    assert queried, "no metric found in the expressions"
    assert queried - allowed == set(), f"{source} query metrics the service does not export"
    assert queried - recording_rules() <= exported


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_every_label_queried_is_one_the_metric_carries(source: str) -> None:
    exprs = rule_expressions() if source == "alert rules" else dashboard_expressions()
    labels = exported_labels()
    every_label = set().union(*labels.values()) | TARGET_LABELS
    for expr in exprs:
        for metric, label in label_matchers(expr):
            assert label in labels.get(metric, set()) | TARGET_LABELS, f"{metric}{{{label}}}"
        assert grouping_labels(expr) <= every_label, expr


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_metrics_every_pod_reads_from_redis_are_aggregated_with_max_not_sum(source: str) -> None:
    # every pod exports the same (global) value of these: a sum over pods multiplies it
    exprs = rule_expressions() if source == "alert rules" else dashboard_expressions()
    seen: set[str] = set()
    for expr in exprs:
        names = metric_names(expr) & GLOBAL_METRICS
        seen |= names
        if names:
            assert not re.search(r"\b(sum|count)\b", _normalise(expr)), expr
    if source == "dashboard":
        assert seen == GLOBAL_METRICS


# --- dashboard ---------------------------------------------------------------------------------


def test_dashboard_has_the_required_sections_and_well_formed_panels() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    rows = {p["title"] for p in board["panels"] if p["type"] == "row"}
    assert rows >= DASHBOARD_SECTIONS
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert grid["x"] + grid["w"] <= 24
        assert not cells & occupied, f"panel {panel['title']} overlaps another"
        occupied |= cells
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_dashboard_shows_holds_by_outcome_and_every_alerted_signal() -> None:
    exprs = " ".join(dashboard_expressions())
    assert re.search(r"sum by \(outcome\) \(rate\(kai_inventory_holds_total", exprs)
    for rule in alert_rules():
        for name in metric_names(str(rule["expr"])) - recording_rules():
            assert name in exprs, f"{rule['alert']} watches {name}, which no panel shows"
