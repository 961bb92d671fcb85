"""Kubernetes trusts X-Forwarded-For only from the ingress: a narrow setting, and a NetworkPolicy that
lets nothing else reach the pods (the manifests believed every RFC 1918 range, and nothing kept other
pods from sending their own X-Forwarded-For)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_pods_believe_forwarded_addresses_from_no_more_than_the_pod_network() -> None:
    [app] = find("Deployment", "weathernote")["spec"]["template"]["spec"]["containers"]
    [trusted] = [v["value"] for v in app["env"] if v["name"] == "WEATHERNOTE_TRUSTED_PROXIES"]
    networks = [ipaddress.ip_network(part) for part in trusted.split(",")]
    assert all(network.num_addresses <= 2**16 for network in networks), f"too wide: {trusted}"


def test_only_the_ingress_and_prometheus_reach_the_pods() -> None:
    labels = find("Deployment", "weathernote")["spec"]["template"]["metadata"]["labels"]
    [policy] = [
        d
        for d in documents()
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in peers}
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert all("podSelector" in peer for peer in peers), "a namespace's chosen pods, not all of them"
    ports = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert ports == {8000}
