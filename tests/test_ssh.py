"""SSH in-process, against a real OpenSSH sshd: key types and formats, several keys, host key
checking (unknown, mismatch, hashed, disabled), group-readable keys, protocol v2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, parse_logs, run_once, running
from support.leaks import assert_no_leak, files_under
from support.servers.sshd import SSH_KEYGEN, Sshd, keygen
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)


def _fingerprint(pub: Path) -> str:
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return out.split()[1]


def _env(gs_env: dict[str, str], sshd: Sshd, up: Upstream, tmp_path: Path, keys: list[Path],
         known_hosts: str | None = None) -> dict[str, str]:
    kh = tmp_path / "known_hosts"
    kh.write_text((known_hosts if known_hosts is not None else sshd.known_hosts_line()) + "\n")
    return {**gs_env, "GITSYNC_REPO": sshd.url_for(up.bare),
            "GITSYNC_SSH_KEY_FILE": ":".join(str(k) for k in keys),
            "GITSYNC_SSH_KNOWN_HOSTS_FILE": str(kh), "GITSYNC_ERROR_FILE": "error.json"}


def _authorized(sshd: Sshd, tmp_path: Path, kind: str, fmt: str = "") -> Path:
    key = keygen(tmp_path / f"id_{kind}{fmt}", kind, fmt, bits=2048 if kind == "rsa" else 0)
    sshd.authorize(Path(f"{key}.pub"))
    return key


@pytest.mark.parametrize(("kind", "fmt"), [("ed25519", ""), ("ecdsa", "PEM"), ("rsa", "PEM"),
                                           ("rsa", "")])
def test_sync_with_each_key_type_and_format(
    kind: str, fmt: str, sshd: Sshd, upstream: Upstream, gs_env: dict[str, str],
    tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, kind, fmt)
    env_requests = sshd.log().count("req env")
    res = run_once(_env(gs_env, sshd, upstream, tmp_path, [key]), args=["-v", "9"])
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", upstream.head_sha())
    assert (wt / "file").read_text().startswith("test_sync_with_each_key_type")
    # protocol v2 was asked for, through the GIT_PROTOCOL variable sshd accepts
    assert sshd.log().count("req env") > env_requests
    key_lines = [ln for ln in key.read_text().splitlines() if not ln.startswith("-----")]
    assert_no_leak(key_lines, res.stdout, res.stderr, files=files_under(root))


def test_several_keys_tried_in_order(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    stranger = keygen(tmp_path / "stranger", "ed25519")
    good = _authorized(sshd, tmp_path, "ed25519")
    env = _env(gs_env, sshd, upstream, tmp_path, [tmp_path / "missing", stranger, good])
    res = run_once(env, args=["-v", "2"])
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    done = [r for r in parse_logs(res.stderr) if r.get("msg") == "ssh authenticated"]
    assert done and done[0]["key_file"] == str(good)


def test_wrong_key_fails_naming_user_and_host(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    stranger = keygen(tmp_path / "stranger", "ed25519")
    res = run_once(_env(gs_env, sshd, upstream, tmp_path, [stranger]))
    assert res.returncode == 1
    assert not (root / "link").exists()
    error = (root / "error.json").read_text()
    assert "authentication failed" in error
    assert f"{sshd.user}@[127.0.0.1]:{sshd.port}" in error
    assert _fingerprint(Path(f"{stranger}.pub")) in error  # which key was refused


def test_unknown_host_fails_with_offered_fingerprint(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    other = sshd.known_hosts_line().replace(f"[127.0.0.1]:{sshd.port}", "git.example.com")
    res = run_once(_env(gs_env, sshd, upstream, tmp_path, [key], known_hosts=other))
    assert res.returncode == 1
    error = (root / "error.json").read_text()
    assert f"no host key for [127.0.0.1]:{sshd.port}" in error
    assert _fingerprint(sshd.dir / "ssh_host_ed25519_key.pub") in error
    assert (tmp_path / "known_hosts").read_text() == other + "\n"  # never written


def test_host_key_mismatch_fails_with_offered_fingerprint(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    impostor = keygen(tmp_path / "impostor_host", "ed25519")
    pub = Path(f"{impostor}.pub").read_text().split()
    line = f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}"
    res = run_once(_env(gs_env, sshd, upstream, tmp_path, [key], known_hosts=line))
    assert res.returncode == 1
    error = (root / "error.json").read_text()
    assert "does not match" in error and f"[127.0.0.1]:{sshd.port}" in error
    assert _fingerprint(sshd.dir / "ssh_host_ed25519_key.pub") in error
    assert not (root / "link").exists()


def test_hashed_entry_for_the_rsa_host_key_only(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    line = sshd.known_hosts_line("rsa", hashed=True)
    assert line.startswith("|1|")
    res = run_once(_env(gs_env, sshd, upstream, tmp_path, [key], known_hosts=line))
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())


def test_known_hosts_check_disabled_warns(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    env = _env(gs_env, sshd, upstream, tmp_path, [key], known_hosts="")
    env["GITSYNC_SSH_KNOWN_HOSTS"] = "false"
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    warnings = [r for r in parse_logs(res.stderr) if "host key checking is disabled" in
                str(r.get("msg"))]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


def test_group_readable_key_used_with_one_warning(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    os.chmod(key, 0o640)  # what fsGroup produces
    env = {**_env(gs_env, sshd, upstream, tmp_path, [key]), "GITSYNC_PERIOD": "100ms"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=15)  # several syncs, several connections
        warnings = [r for r in gs.logs() if "readable by group" in str(r.get("msg"))]
    assert len(warnings) == 1, warnings
    assert warnings[0]["key_file"] == str(key) and warnings[0]["mode"] == "0o640"


def test_a_missing_known_hosts_file_says_how_to_make_one(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    key = _authorized(sshd, tmp_path, "ed25519")
    env = {**_env(gs_env, sshd, upstream, tmp_path, [key]),
           "GITSYNC_SSH_KNOWN_HOSTS_FILE": str(tmp_path / "absent")}
    res = run_once(env)
    assert res.returncode == 1
    error = json.loads((root / "error.json").read_text())["Err"]
    assert f"can't read known_hosts file {tmp_path / 'absent'}: No such file or directory" in error
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 > known_hosts" in error
    assert "GITSYNC_SSH_KNOWN_HOSTS=false" in error
