"""The Kubernetes manifests under k8s/ and deploy-with-source.sh.

Every overlay renders with ``kubectl kustomize``; every object (overlays, the standalone guide
files, the Secret templates, the script's --dry-run output) validates against the Kubernetes 1.30
schemas offline (kubernetes-validate ships them); every container passes the "restricted" Pod
Security Standard; the gitsync containers' env resolves (ConfigMap values substituted) into valid
gitsync settings with no unknown or deprecated name; the script is shellcheck-clean, prints what it
would apply with --dry-run and, against a stub kubectl, applies then restarts both deployments.

The user's guide followed verbatim (against the stub's cluster state): a password patched into the
ConfigMap is moved into the Secret and out of the apps' environment, an SSH Secret without
known_hosts stops the deployment with the ssh-keyscan command, the ConfigMap's period survives
a redeploy, and --dry-run prints each of these fixes before the manifests, changing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.servers import require

from gitsync.settings.model import KNOWN_ENV, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S = REPO_ROOT / "k8s"
SCRIPT = K8S / "deploy-with-source.sh"
OVERLAYS = ("git", "git-classic", "git-one-time", "git-webhook", "local")
GIT_OVERLAYS = ("git", "git-classic", "git-one-time")
GUIDE_KEYS = {"SOURCE_CODE_MODE", "GIT_REPO_URL", "GIT_BRANCH", "GIT_SYNC_PERIOD", "GIT_USERNAME"}
APPS = ("mcp-indexer", "mcp-memory")
K8S_VERSION = "1.30.0"

Obj = dict[str, Any]


def _kubectl() -> str:
    return require("kubectl", "not on PATH (kubectl kustomize renders the overlays)")


def _docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(path: Path) -> list[Obj]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path}: {proc.stderr}"
    return _docs(proc.stdout)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    out = {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}
    out["base"] = kustomize(K8S / "base")
    return out


# ------------------------------------------------------------------ the script, with a stub kubectl

STUB = """#!/bin/sh
# Records every call. `kustomize` runs the real kubectl; `apply -k DIR` renders DIR to a file. The
# cluster is $STUB_STATE: configmap/KEY files (no directory: no ConfigMap) and secret-NAME/KEY.
echo "$*" >> "$KUBECTL_LOG"
case "$1 $2" in
    "kustomize "*) exec "$REAL_KUBECTL" "$@" ;;
    "get secret")
        [ -d "$STUB_STATE/secret-$3" ] || {
            echo "Error from server (NotFound): secrets \\"$3\\" not found" >&2; exit 1; }
        case "$7" in
            name) echo "secret/$3" ;;
            jsonpath=*)
                key="${7#jsonpath=\\{.data.}"; key="${key%\\}}"
                [ ! -f "$STUB_STATE/secret-$3/$key" ] || base64 -w0 "$STUB_STATE/secret-$3/$key" ;;
        esac ;;
    "get configmap")
        [ -d "$STUB_STATE/configmap" ] || {
            echo "Error from server (NotFound): configmaps \\"$3\\" not found" >&2; exit 1; }
        key="${7#jsonpath=\\{.data.}"; key="${key%\\}}"
        [ ! -f "$STUB_STATE/configmap/$key" ] || cat "$STUB_STATE/configmap/$key" ;;
    "create secret")
        mkdir "$STUB_STATE/secret-$4" || exit 1
        cat > "$STUB_STATE/secret-$4/password"
        echo "secret/$4 created" ;;
    "patch configmap")
        case "$*" in
            *'"remove","path":"/data/GIT_PASSWORD"'*) rm "$STUB_STATE/configmap/GIT_PASSWORD" ;;
            *) echo "stub kubectl: unexpected patch $*" >&2; exit 3 ;;
        esac
        echo "configmap/$3 patched" ;;
    "apply -k") exec "$REAL_KUBECTL" kustomize "$3" > "$KUBECTL_LOG.applied" ;;
    "rollout restart") echo "deployment.apps/${3#deployment/} restarted" ;;
    *) echo "stub kubectl: unexpected $*" >&2; exit 3 ;;
esac
"""

# What `secrets="name ..."` creates: each Secret with the keys the guide's commands give it.
SECRET_KEYS = {
    "git-ssh-key": {"ssh-private-key": "KEY", "known_hosts": "github.com ssh-ed25519 AAAA"},
    "git-https-credentials": {"username": "bot", "password": "tok"},
    "git-sync-trigger": {"secret": "s3cret"},
}
READS = ("get", "kustomize")  # the kubectl calls that change nothing


class Deploy:
    """Runs deploy-with-source.sh with a stub kubectl first on PATH."""

    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "kubectl").write_text(STUB)
        (self.bin / "kubectl").chmod(0o755)
        self.log = tmp / "kubectl.log"
        self.state = tmp / "cluster"

    def __call__(
        self, *args: str, secrets: str = "", configmap: dict[str, str] | None = None,
        secret_keys: dict[str, dict[str, str]] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir()
        if configmap is not None:
            (self.state / "configmap").mkdir()
            for k, v in configmap.items():
                (self.state / "configmap" / k).write_text(v)
        for name in secrets.split():
            (self.state / f"secret-{name}").mkdir()
            for k, v in ((secret_keys or {}).get(name, SECRET_KEYS[name])).items():
                (self.state / f"secret-{name}" / k).write_text(v)
        env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.bin.parent),
            "KUBECTL_LOG": str(self.log),
            "REAL_KUBECTL": _kubectl(),
            "STUB_STATE": str(self.state),
        }
        self.log.unlink(missing_ok=True)
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def changes(self) -> list[str]:
        """The calls that would change a cluster."""
        return [c for c in self.calls() if c.split()[0] not in READS]

    def applied(self) -> list[Obj]:
        return _docs(Path(f"{self.log}.applied").read_text())


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Deploy]:
    yield Deploy(tmp_path)
    assert not list(K8S.glob(".deploy.*")), "the script left its work directory behind"


DRY_RUNS: dict[str, tuple[str, ...]] = {
    "https": ("git", "https://github.com/your-org/your-repo.git", "main"),
    "https-private": ("--username", "bot", "git", "https://github.com/your-org/private.git", "v2"),
    "ssh": ("git", "git@github.com:your-org/your-repo.git", "release/1.x"),
    "ssh-url-classic": ("--variant", "classic", "git", "ssh://git@git.example.com:2222/r.git"),
    "one-time": ("--variant=one-time", "--period", "300", "git", "https://h.example/r.git"),
    "webhook": ("--webhook", "git", "https://github.com/your-org/your-repo.git", "main"),
    "local": ("local",),
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for name, args in DRY_RUNS.items():
        d = Deploy(tmp_path_factory.mktemp(f"dry-{name}"))
        proc = d("--dry-run", *args)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert d.calls()[-1].split()[0] == "kustomize"
        assert d.changes() == [], "--dry-run changed a cluster"
        out[name] = _docs(proc.stdout)
    return out


# --------------------------------------------------------------------------------- walking


def deployments(docs: list[Obj]) -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def pod_containers(dep: Obj) -> list[tuple[str, Obj]]:
    spec = dep["spec"]["template"]["spec"]
    return [(kind, c) for kind in ("initContainers", "containers") for c in spec.get(kind, [])]


def git_sync(dep: Obj) -> tuple[str, Obj] | None:
    found = [(k, c) for k, c in pod_containers(dep) if c["name"] == "git-sync"]
    assert len(found) <= 1
    return found[0] if found else None


def configmap(docs: list[Obj]) -> dict[str, str]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def resolved_env(container: Obj, cm: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            env[e["name"]] = f"<secret {e['valueFrom']['secretKeyRef']['name']}>"
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == "context-engine-config", e
            env[e["name"]] = cm[ref["key"]]
    return env


def all_sets(rendered: dict[str, list[Obj]], dry_runs: dict[str, list[Obj]]) -> dict[str, list[Obj]]:
    out = {f"overlay {k}": v for k, v in rendered.items()}
    out.update({f"dry-run {k}": v for k, v in dry_runs.items()})
    for p in [*K8S.glob("*.yaml"), *K8S.glob("secrets/*.yaml")]:
        out[str(p.relative_to(K8S))] = _docs(p.read_text())
    return out


# ---------------------------------------------------------------------------------- the tests


def test_every_overlay_renders_the_two_apps(rendered: dict[str, list[Obj]]) -> None:
    for name in OVERLAYS:
        deps = deployments(rendered[name])
        assert sorted(deps) == list(APPS), name
        for dep in deps.values():
            assert dep["metadata"]["namespace"] == "context-engine"
            has_sync = git_sync(dep) is not None
            assert has_sync == (name != "local"), f"{name}: gitsync only in git mode"
        assert configmap(rendered[name])["SOURCE_CODE_MODE"] == ("local" if name == "local" else "git")


def test_every_object_validates_against_kubernetes_1_30(
    rendered: dict[str, list[Obj]], dry_runs: dict[str, list[Obj]]
) -> None:
    import kubernetes_validate  # a test dependency: missing, the test fails

    checked = 0
    for where, docs in all_sets(rendered, dry_runs).items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except Exception as e:  # ValidationError, or no schema for the kind
                pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {str(e)[:800]}")
            checked += 1
    assert checked > 20


def _restricted(where: str, dep: Obj) -> None:
    spec = dep["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
    assert not [v for v in spec.get("volumes", []) if "hostPath" in v], f"{where}: hostPath volume"
    assert pod_sc.get("fsGroup") == 65533, where
    for kind, c in pod_containers(dep):
        sc = c.get("securityContext", {})
        who = f"{where}: {kind} {c['name']}"
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, who
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, who
        assert sc.get("allowPrivilegeEscalation") is False, who
        assert sc.get("readOnlyRootFilesystem") is True, who
        assert sc.get("privileged", False) is False, who
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], who
        assert not sc.get("capabilities", {}).get("add"), who
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", who
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{who}: read-only root needs a writable /tmp"


def test_every_container_passes_the_restricted_profile(
    rendered: dict[str, list[Obj]], dry_runs: dict[str, list[Obj]]
) -> None:
    count = 0
    for where, docs in all_sets(rendered, dry_runs).items():
        for dep in deployments(docs).values():
            _restricted(where, dep)
            count += 1
    assert count >= 2 * (len(OVERLAYS) + len(DRY_RUNS)) + 2
    ns = [d for d in rendered["base"] if d["kind"] == "Namespace"]
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_gitsync_env_is_valid_gitsync_configuration(
    rendered: dict[str, list[Obj]], dry_runs: dict[str, list[Obj]]
) -> None:
    """Every GITSYNC_/GIT_SYNC_ name is one gitsync accepts, and the env (ConfigMap values put in)
    loads into settings with no warning: no unknown, no deprecated name, no conflict."""
    seen = 0
    for where, docs in all_sets(rendered, dry_runs).items():
        cm = configmap(docs) if any(d["kind"] == "ConfigMap" for d in docs) else None
        if cm is None:  # a standalone file: the base's ConfigMap
            cm = configmap(rendered["base"])
        for dep in deployments(docs).values():
            for _, c in pod_containers(dep):
                for e in c.get("env", []):
                    if e["name"].startswith(("GITSYNC_", "GIT_SYNC_")):
                        assert e["name"] in KNOWN_ENV, f"{where}: {e['name']} is not a gitsync setting"
            found = git_sync(dep)
            if found is None:
                continue
            env = resolved_env(found[1], cm)
            settings, notices = load_settings({}, env)
            assert notices == [], f"{where}: {notices}"
            assert str(settings.root) == "/git" and settings.link == "latest", where
            assert settings.max_failures == 5, where
            seen += 1
    assert seen >= 2 * (len(GIT_OVERLAYS) + 5)


def test_configmap_has_the_guides_keys_and_no_password(rendered: dict[str, list[Obj]]) -> None:
    data = configmap(rendered["base"])
    assert set(data) == GUIDE_KEYS
    text = (K8S / "base" / "configmap.yaml").read_text()
    assert "GIT_PASSWORD:" not in text and "no GIT_PASSWORD key" in text, "a comment says why"
    dep = deployments(rendered["git"])["mcp-indexer"]
    found = git_sync(dep)
    assert found is not None
    refs = {
        e["name"]: e["valueFrom"]["configMapKeyRef"]["key"]
        for e in found[1]["env"]
        if "valueFrom" in e
    }
    assert refs == {"GITSYNC_REPO": "GIT_REPO_URL", "GITSYNC_REF": "GIT_BRANCH",
                    "GITSYNC_PERIOD": "GIT_SYNC_PERIOD"}  # fmt: skip


def test_the_three_gitsync_variants(rendered: dict[str, list[Obj]]) -> None:
    shapes: dict[str, Obj] = {}
    for name in GIT_OVERLAYS:
        for app, dep in deployments(rendered[name]).items():
            found = git_sync(dep)
            assert found is not None
            kind, c = found
            spec = dep["spec"]["template"]["spec"]
            app_c = next(x for x in spec["containers"] if x["name"] == app)
            vols = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in vols["source"], "the shared volume is an emptyDir"
            assert {"name": "source", "mountPath": "/git"} in c["volumeMounts"]
            assert {"name": "source", "mountPath": "/work", "readOnly": True} in app_c["volumeMounts"]
            secret = vols["git-secret"]["projected"]
            assert secret["defaultMode"] == 0o440
            assert {s["secret"]["name"] for s in secret["sources"]} == {
                "git-ssh-key", "git-https-credentials"}  # fmt: skip
            assert all(s["secret"]["optional"] for s in secret["sources"])
            env = {e["name"]: e.get("value") for e in c["env"]}
            if name == "git-one-time":
                assert kind == "initContainers" and "restartPolicy" not in c
                assert env["GITSYNC_ONE_TIME"] == "true"
                assert not any(k in c for k in ("livenessProbe", "readinessProbe", "startupProbe"))
            else:
                assert (kind, c.get("restartPolicy")) == (
                    ("initContainers", "Always") if name == "git" else ("containers", None))  # fmt: skip
                port = int(env["GITSYNC_HTTP_BIND"].rpartition(":")[2])
                assert [p["containerPort"] for p in c["ports"]] == [port]
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
                assert ("startupProbe" in c) == (name == "git")
            shape = {k: c[k] for k in ("image", "securityContext", "resources", "volumeMounts")}
            shapes.setdefault("first", shape)
            assert shape == shapes["first"], f"{name}/{app} differs from the other variants"


def test_standalone_guide_files_are_the_git_overlay(rendered: dict[str, list[Obj]]) -> None:
    deps = deployments(rendered["git"])
    for app in APPS:
        (doc,) = _docs((K8S / f"{app}-git.yaml").read_text())
        assert doc == deps[app], f"k8s/{app}-git.yaml drifted from overlays/git"


def test_resources_cover_the_benchmarks_peak_rss(rendered: dict[str, list[Obj]]) -> None:
    results = REPO_ROOT / "benchmarks" / "results.json"
    if not results.exists():
        pytest.skip("no benchmarks/results.json: the manifests' figures are the fallback")
    data = json.loads(results.read_text())
    peak = max(s["peak_rss"]["gitsync"] for s in data["sizes"] if s.get("peak_rss"))
    mib = {"Mi": 1.0, "Gi": 1024.0}
    for name in GIT_OVERLAYS:
        for dep in deployments(rendered[name]).values():
            found = git_sync(dep)
            assert found is not None
            res = found[1]["resources"]
            req = float(res["requests"]["memory"][:-2]) * mib[res["requests"]["memory"][-2:]]
            lim = float(res["limits"]["memory"][:-2]) * mib[res["limits"]["memory"][-2:]]
            assert req >= peak, f"{name}: request {req} MiB < measured peak {peak:.0f} MiB"
            assert lim >= 2 * peak, f"{name}: limit {lim} MiB < 2 x peak {peak:.0f} MiB"


def test_local_mode_reads_a_volume_claim_at_the_same_path(rendered: dict[str, list[Obj]]) -> None:
    docs = rendered["local"]
    kinds = {d["kind"] for d in docs}
    assert {"PersistentVolume", "PersistentVolumeClaim"} <= kinds
    for app, dep in deployments(docs).items():
        spec = dep["spec"]["template"]["spec"]
        vol = next(v for v in spec["volumes"] if v["name"] == "source")
        assert vol["persistentVolumeClaim"]["readOnly"] is True
        (c,) = spec["containers"]
        assert {"name": "source", "mountPath": "/work/latest", "readOnly": True} in c[
            "volumeMounts"], app  # fmt: skip


# ------------------------------------------------------------------------------- the script


def test_script_is_shellcheck_clean() -> None:
    shellcheck = require("shellcheck", "not on PATH (Debian's shellcheck; tests/system-deps.sh)")
    proc = subprocess.run(
        [shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    head = SCRIPT.read_text().splitlines()[:6]
    assert "set -euo pipefail" in head
    assert os.access(SCRIPT, os.X_OK)


def test_script_help(deploy: Deploy) -> None:
    proc = deploy("--help")
    assert proc.returncode == 0
    for words in ("git <repo-url> [branch]", "local", "--dry-run", "git-ssh-key"):
        assert words in proc.stdout
    assert deploy.calls() == []


def test_dry_run_git_https(dry_runs: dict[str, list[Obj]]) -> None:
    docs = dry_runs["https"]
    assert configmap(docs) == {
        "SOURCE_CODE_MODE": "git", "GIT_REPO_URL": "https://github.com/your-org/your-repo.git",
        "GIT_BRANCH": "main", "GIT_SYNC_PERIOD": "60", "GIT_USERNAME": "",
    }  # fmt: skip
    for dep in deployments(docs).values():
        found = git_sync(dep)
        assert found is not None and found[0] == "initContainers"
        names = {e["name"] for e in found[1]["env"]}
        assert not names & {"GITSYNC_USERNAME", "GITSYNC_PASSWORD_FILE"}, "public: no credentials"

    private = dry_runs["https-private"]
    assert configmap(private)["GIT_USERNAME"] == "bot"
    assert configmap(private)["GIT_BRANCH"] == "v2"
    for dep in deployments(private).values():
        found = git_sync(dep)
        assert found is not None
        env = resolved_env(found[1], configmap(private))
        assert env["GITSYNC_USERNAME"] == "bot"
        assert env["GITSYNC_PASSWORD_FILE"] == "/etc/git-secret/password"


def test_dry_run_git_ssh(dry_runs: dict[str, list[Obj]], deploy: Deploy) -> None:
    cm = configmap(dry_runs["ssh"])
    assert (cm["GIT_REPO_URL"], cm["GIT_BRANCH"]) == ("git@github.com:your-org/your-repo.git", "release/1.x")
    proc = deploy("--dry-run", *DRY_RUNS["ssh"])
    assert "git-ssh-key" in proc.stderr, "the dry run says the SSH Secret is needed"
    classic = dry_runs["ssh-url-classic"]
    assert configmap(classic)["GIT_REPO_URL"] == "ssh://git@git.example.com:2222/r.git"
    for dep in deployments(classic).values():
        found = git_sync(dep)
        assert found is not None and found[0] == "containers"
    one_time = dry_runs["one-time"]
    assert configmap(one_time)["GIT_SYNC_PERIOD"] == "300"


def test_dry_run_local(dry_runs: dict[str, list[Obj]]) -> None:
    docs = dry_runs["local"]
    assert configmap(docs)["SOURCE_CODE_MODE"] == "local"
    for dep in deployments(docs).values():
        assert git_sync(dep) is None


def test_apply_then_restart_both_deployments(deploy: Deploy) -> None:
    proc = deploy("git", "https://github.com/your-org/your-repo.git", "main")
    assert proc.returncode == 0, proc.stderr
    calls = deploy.changes()
    assert calls[0].startswith("apply -k ")
    assert calls[1:] == [
        "rollout restart deployment/mcp-memory -n context-engine",
        "rollout restart deployment/mcp-indexer -n context-engine",
    ]
    assert configmap(deploy.applied())["GIT_REPO_URL"] == "https://github.com/your-org/your-repo.git"


def test_ssh_url_needs_the_ssh_secret(deploy: Deploy) -> None:
    url = "git@github.com:your-org/your-repo.git"
    proc = deploy("git", url)
    assert proc.returncode == 1
    assert "git-ssh-key" in proc.stderr and "kubectl create secret generic git-ssh-key" in proc.stderr
    assert not [c for c in deploy.calls() if c.startswith(("apply", "rollout"))]
    proc = deploy("git", url, secrets="git-ssh-key")
    assert proc.returncode == 0, proc.stderr
    assert "get secret git-ssh-key -n context-engine -o name" in deploy.calls()
    assert [c.split()[0] for c in deploy.changes()] == ["apply", "rollout", "rollout"]


def test_private_https_needs_the_https_secret(deploy: Deploy) -> None:
    proc = deploy("--username", "bot", "git", "https://h.example/r.git")
    assert proc.returncode == 1 and "git-https-credentials" in proc.stderr
    proc = deploy("--username", "bot", "git", "https://h.example/r.git", secrets="git-https-credentials")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("git",),
        ("sync", "https://h/r.git"),
        ("git", "not a url"),
        ("git", "ftp://h/r.git"),
        ("git", "https://h/r.git", "-bad"),
        ("git", "https://h/r.git", "main", "extra"),
        ("local", "https://h/r.git"),
        ("--variant", "fancy", "git", "https://h/r.git"),
        ("--username", "bot", "git", "git@h:r.git"),
        ("--period", "0", "git", "https://h/r.git"),
        ("--bogus", "local"),
    ],
)
def test_bad_arguments_are_refused_before_kubectl(deploy: Deploy, args: tuple[str, ...]) -> None:
    proc = deploy(*args)
    assert proc.returncode != 0
    assert proc.stderr.strip(), "says why"
    assert deploy.calls() == []


# ------------------------------------------------------------- the user's guide, verbatim

GUIDE_HTTPS = ("git", "https://github.com/your-org/your-repo.git", "main")
GUIDE_SSH = ("git", "git@github.com:your-org/your-repo.git", "main")
TOKEN = "ghp_guideToken0123456789abcdef"
# The guide: kubectl patch configmap context-engine-config -n context-engine --patch
#   '{"data":{"GIT_USERNAME":"your-username","GIT_PASSWORD":"your-personal-access-token"}}'
GUIDE_CONFIGMAP = {
    "SOURCE_CODE_MODE": "git", "GIT_REPO_URL": "https://github.com/your-org/your-repo.git",
    "GIT_BRANCH": "main", "GIT_SYNC_PERIOD": "60", "GIT_USERNAME": "your-username",
    "GIT_PASSWORD": TOKEN,
}  # fmt: skip


def _apps_env_and_mounts(dep: Obj) -> tuple[list[Obj], list[str]]:
    spec = dep["spec"]["template"]["spec"]
    app = next(c for c in spec["containers"] if c["name"] == dep["metadata"]["name"])
    return app.get("env", []) + app.get("envFrom", []), [m["name"] for m in app["volumeMounts"]]


def test_guide_https_password_in_the_configmap_moves_into_the_secret(deploy: Deploy) -> None:
    proc = deploy(*GUIDE_HTTPS, configmap=GUIDE_CONFIGMAP)
    assert proc.returncode == 0, proc.stderr
    assert "GIT_PASSWORD" in proc.stderr and "git-https-credentials" in proc.stderr
    changes = deploy.changes()
    assert changes[:2] == [
        "create secret generic git-https-credentials -n context-engine --from-file=password=/dev/stdin",
        "patch configmap context-engine-config -n context-engine --type json -p "
        '[{"op":"remove","path":"/data/GIT_PASSWORD"}]',
    ], "the Secret is made and the ConfigMap emptied before anything is applied"
    assert [c.split()[0] for c in changes[2:]] == ["apply", "rollout", "rollout"]
    assert (deploy.state / "secret-git-https-credentials" / "password").read_text() == TOKEN
    assert not (deploy.state / "configmap" / "GIT_PASSWORD").exists()
    # The token went through a pipe: no argument, no output, no manifest shows it.
    assert TOKEN not in deploy.log.read_text() + proc.stdout + proc.stderr
    applied = deploy.applied()
    assert TOKEN not in json.dumps(applied)
    cm = configmap(applied)
    assert "GIT_PASSWORD" not in cm and cm["GIT_USERNAME"] == "your-username"
    for dep in deployments(applied).values():
        found = git_sync(dep)
        assert found is not None
        env = resolved_env(found[1], cm)
        assert env["GITSYNC_USERNAME"] == "your-username"
        assert env["GITSYNC_PASSWORD_FILE"] == "/etc/git-secret/password"
        app_env, app_mounts = _apps_env_and_mounts(dep)
        assert "git-https-credentials" not in json.dumps(app_env) and "git-secret" not in app_mounts


def test_guide_https_dry_run_prints_the_fix_and_changes_nothing(deploy: Deploy) -> None:
    proc = deploy("--dry-run", *GUIDE_HTTPS, configmap=GUIDE_CONFIGMAP)
    assert proc.returncode == 0, proc.stderr
    assert deploy.changes() == []
    assert (deploy.state / "configmap" / "GIT_PASSWORD").read_text() == TOKEN
    fix = proc.stderr.index("--from-file=password=/dev/stdin")
    assert fix < proc.stderr.index("# --dry-run"), "the fix comes before the manifests"
    assert '"path":"/data/GIT_PASSWORD"' in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr + deploy.log.read_text()
    for dep in deployments(_docs(proc.stdout)).values():
        found = git_sync(dep)
        assert found is not None
        assert {"GITSYNC_USERNAME", "GITSYNC_PASSWORD_FILE"} <= {e["name"] for e in found[1]["env"]}


def test_guide_https_password_beside_an_existing_secret_stops_with_the_command(deploy: Deploy) -> None:
    proc = deploy(*GUIDE_HTTPS, configmap=GUIDE_CONFIGMAP, secrets="git-https-credentials")
    assert proc.returncode == 1
    assert "kubectl patch configmap context-engine-config -n context-engine --type json" in proc.stderr
    assert deploy.changes() == []
    proc = deploy(*GUIDE_HTTPS, configmap={**GUIDE_CONFIGMAP, "GIT_USERNAME": ""})
    assert proc.returncode == 1 and "--username" in proc.stderr
    assert deploy.changes() == []


def test_guide_ssh_secret_without_known_hosts_stops_with_ssh_keyscan(deploy: Deploy) -> None:
    """The guide's `kubectl create secret generic git-ssh-key --from-file=ssh-private-key=...`
    has no known_hosts: every sync would fail on the host key, so the deployment stops first."""
    no_hosts = {"git-ssh-key": {"ssh-private-key": "KEY"}}
    proc = deploy(*GUIDE_SSH, secrets="git-ssh-key", secret_keys=no_hosts)
    assert proc.returncode == 1
    assert "ssh-keyscan github.com > known_hosts" in proc.stderr
    assert "--from-file=known_hosts=./known_hosts" in proc.stderr
    assert deploy.changes() == []

    proc = deploy("--dry-run", *GUIDE_SSH, secrets="git-ssh-key", secret_keys=no_hosts)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.index("ssh-keyscan github.com") < proc.stderr.index("# --dry-run")
    assert deployments(_docs(proc.stdout)) and deploy.changes() == []

    url = "ssh://git@git.example.com:2222/org/r.git"
    proc = deploy("git", url, secrets="git-ssh-key", secret_keys=no_hosts)
    assert proc.returncode == 1 and "ssh-keyscan -p 2222 git.example.com > known_hosts" in proc.stderr
    proc = deploy(*GUIDE_SSH, secrets="git-ssh-key")
    assert proc.returncode == 0, proc.stderr
    assert "ssh-keyscan" not in proc.stderr


@pytest.mark.parametrize(
    ("live", "args", "period"),
    [({"GIT_SYNC_PERIOD": "300"}, (), "300"), ({"GIT_SYNC_PERIOD": "2m"}, (), "2m"),
     ({"GIT_SYNC_PERIOD": "300"}, ("--period", "30"), "30"), (None, (), "60")],
    ids=["kept", "kept-duration", "given", "new"],
)  # fmt: skip
def test_a_redeploy_keeps_the_configmaps_period(
    deploy: Deploy, live: dict[str, str] | None, args: tuple[str, ...], period: str
) -> None:
    proc = deploy(*args, *GUIDE_HTTPS, configmap=live)
    assert proc.returncode == 0, proc.stderr
    assert configmap(deploy.applied())["GIT_SYNC_PERIOD"] == period


# ------------------------------------------------------------------------------ webhooks


def test_webhook_overlay_exposes_only_the_trigger_and_keeps_polling(
    rendered: dict[str, list[Obj]],
) -> None:
    docs = rendered["git-webhook"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deps = deployments(docs)
    assert len(services) == len(deps) == 2, "one Service per app: a push must reach both"
    for name, svc in services.items():
        (app,) = [a for a in APPS if name == f"{a}-git-sync"]
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": app}
        assert deps[app]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == app
        (port,) = svc["spec"]["ports"]
        found = git_sync(deps[app])
        assert found is not None
        assert port["targetPort"] in [p["name"] for p in found[1]["ports"]]
        env = {e["name"]: e for e in found[1]["env"]}
        secret_file = env["GITSYNC_TRIGGER_SECRET_FILE"]["value"]
        mount = next(m for m in found[1]["volumeMounts"] if secret_file.startswith(m["mountPath"] + "/"))
        vol = next(v for v in deps[app]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert vol["secret"]["secretName"] == "git-sync-trigger"
        assert "GITSYNC_PERIOD" in env, "polling stays on: a Service reaches one replica"
        _, app_mounts = _apps_env_and_mounts(deps[app])
        assert mount["name"] not in app_mounts
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {(p["path"], p["pathType"]) for p in paths} == {("/api/v1/trigger", "Exact")}
    assert {p["backend"]["service"]["name"] for p in paths} == set(services)
    (tmpl,) = _docs((K8S / "secrets" / "git-sync-trigger.yaml").read_text())
    assert set(tmpl["stringData"]) == {"secret"}


def test_script_webhook_needs_its_secret(deploy: Deploy) -> None:
    proc = deploy("--webhook", *GUIDE_HTTPS)
    assert proc.returncode == 1 and "kubectl create secret generic git-sync-trigger" in proc.stderr
    proc = deploy("--webhook", *GUIDE_HTTPS, secrets="git-sync-trigger")
    assert proc.returncode == 0, proc.stderr
    assert any(d["kind"] == "Ingress" for d in deploy.applied())
    proc = deploy("--webhook", "--variant", "classic", *GUIDE_HTTPS)
    assert proc.returncode == 1 and deploy.calls() == []
