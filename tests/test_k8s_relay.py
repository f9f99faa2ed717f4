"""k8s/overlays/relay (issue 17) and deploy-with-source.sh --variant relay, checked with the
helpers and rules of test_k8s.py: renders, validates against Kubernetes 1.30 offline, passes the
restricted profile, and every gitsync container's env loads into settings that fit together
(the sidecars fetch from the relay's Service at the relay's path; the relay's fan-out name is
the headless Service in front of exactly those sidecars, at their trigger port)."""

from __future__ import annotations

import urllib.parse

import pytest
from test_k8s import (
    K8S,
    K8S_VERSION,
    Deploy,
    _restricted,
    configmap,
    deploy,  # noqa: F401  (the fixture)
    deployments,
    git_sync,
    kustomize,
    resolved_env,
)

from gitsync.settings.model import load_settings


def test_the_relay_overlay_fits_together() -> None:
    import kubernetes_validate

    docs = kustomize(K8S / "overlays" / "relay")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deps = deployments(docs)
    assert sorted(deps) == ["gitsync-relay", "mcp-indexer", "mcp-memory"]
    for name, dep in deps.items():
        assert dep["metadata"]["namespace"] == "context-engine"
        _restricted(f"relay {name}", dep)
    relay_dep = deps["gitsync-relay"]
    assert relay_dep["spec"]["replicas"] == 2
    cm = configmap(docs)
    assert {"GIT_RELAY_URL", "GIT_RELAY_FALLBACK_PERIOD", "GIT_REPO_URL"} <= set(cm)

    found = git_sync(relay_dep)
    assert found is not None and found[0] == "containers"
    relay, notices = load_settings({}, resolved_env(found[1], cm))
    assert notices == []
    assert relay.repo == cm["GIT_REPO_URL"] and relay.relay_bind and relay.trigger_secret_file

    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    url = urllib.parse.urlsplit(cm["GIT_RELAY_URL"])
    front = services[url.hostname or ""]
    assert front["spec"]["selector"] == relay_dep["spec"]["template"]["metadata"]["labels"]
    relay_port = int(relay.relay_bind.rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in found[1]["ports"]}
    (svc_port,) = front["spec"]["ports"]
    assert ports[svc_port["targetPort"]] == relay_port and (url.port or 80) == svc_port["port"]
    assert url.path == f"/{relay.relay_name}.git"

    fanout = dict(t.rpartition(":")[::2] for t in relay.relay_fanout_dns.split(","))
    assert sorted(fanout) == ["gitsync-relay-peers", "gitsync-sidecars"]
    # The relays trigger each other: a webhook reaching one replica reaches both.
    peers = services["gitsync-relay-peers"]["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    assert peers["selector"] == relay_dep["spec"]["template"]["metadata"]["labels"]
    relay_http = relay.http_bind.rpartition(":")[2]
    assert fanout["gitsync-relay-peers"] == relay_http == str(peers["ports"][0]["targetPort"])
    fan_port = fanout["gitsync-sidecars"]
    headless = services["gitsync-sidecars"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    for app in ("mcp-indexer", "mcp-memory"):
        dep = deps[app]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert headless["selector"].items() <= labels.items(), app
        assert not headless["selector"].items() <= relay_dep["spec"]["template"]["metadata"][
            "labels"].items()
        sidecar = git_sync(dep)
        assert sidecar is not None and sidecar[1]["restartPolicy"] == "Always"
        settings, notices = load_settings({}, resolved_env(sidecar[1], cm))
        assert notices == [], app
        assert settings.repo == cm["GIT_RELAY_URL"]
        assert settings.period == float(cm["GIT_RELAY_FALLBACK_PERIOD"])
        assert settings.http_bind.rpartition(":")[2] == fan_port == str(
            headless["ports"][0]["targetPort"])
        assert settings.trigger_secret_file == relay.trigger_secret_file
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert vols["git-trigger"]["secret"]["secretName"] == "git-sync-trigger"


@pytest.mark.parametrize("secrets", ["", "git-sync-trigger"])
def test_deploy_script_variant_relay(deploy: Deploy, secrets: str) -> None:  # noqa: F811
    proc = deploy("--variant", "relay", "git", "https://github.com/o/r.git", "main",
                  secrets=secrets)
    if not secrets:
        assert proc.returncode != 0 and "git-sync-trigger" in proc.stderr
        assert {c.split()[0] for c in deploy.calls()} == {"get"}, "only reads: nothing applied"
        return
    assert proc.returncode == 0, proc.stderr
    applied = deploy.applied()
    assert "gitsync-relay" in deployments(applied)
    assert configmap(applied)["GIT_REPO_URL"] == "https://github.com/o/r.git"
    assert [c for c in deploy.calls() if c.startswith("rollout")] == [
        "rollout restart deployment/mcp-memory -n context-engine",
        "rollout restart deployment/mcp-indexer -n context-engine"]
