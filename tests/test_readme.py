"""The README's commands work as pasted. Every fenced block marked ```sh runnable is extracted
and run, in order, by bash in a copy of the repository, against a local repository: the public
URL the README shows is the only thing replaced (by the same repository's URL on the session's
git http-backend server).

``pip install .`` is real (a fresh venv, the dependencies from the package index). No Docker
engine runs here, so ``docker`` is a stand-in on PATH: ``build`` checks there is a Dockerfile
and records the tag (tests/test_image.py builds the image's venv itself); ``run`` starts the
image's ENTRYPOINT with the Dockerfile's ENV, USER override (``-u``), volumes and ``-e`` values
under bubblewrap, with the README's own from-source venv mounted where the image keeps its venv
(/opt/gitsync) and a root that is read-only but for the volumes and /tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.dockerfile_model import exec_form, parse
from support.servers import cannot_start, require
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream

import gitsync

# pip downloads and installs every dependency: minutes on a loaded machine. A hang guard only.
pytestmark = pytest.mark.timeout(1200)

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
SHOWN_URL = "https://github.com/kubernetes/git-sync.git"
IMAGE_VENV = "/opt/gitsync"

DOCKER = r'''#!PYTHON
"""docker, as far as the README uses it (see tests/test_readme.py)."""
import json, os, sys

state = os.environ["DOCKER_STAND_IN"]
image = json.loads(os.environ["DOCKER_STAND_IN_IMAGE"])
args = sys.argv[1:]
if args[:1] == ["build"]:
    tag = args[args.index("-t") + 1]
    if not os.path.isfile(os.path.join(args[-1], "Dockerfile")):
        sys.exit("docker build: no Dockerfile in " + args[-1])
    with open(os.path.join(state, "images"), "a") as f:
        f.write(tag + "\n")
    sys.exit(0)
if args[:1] != ["run"]:
    sys.exit("docker stand-in: only build and run: " + " ".join(args))
user, volumes, env, read_only, rest = None, [], dict(image["env"]), False, args[1:]
while rest and rest[0].startswith("-"):
    opt = rest.pop(0)
    if opt == "--rm":
        continue
    elif opt == "--read-only":
        read_only = True
    elif opt == "--tmpfs":
        rest.pop(0)  # /tmp is a tmpfs anyway
    elif opt == "-u":
        user = rest.pop(0)
    elif opt == "-v":
        host, _, inside = rest.pop(0).partition(":")
        volumes.append((host, inside))
    elif opt == "-e":
        k, _, v = rest.pop(0).partition("=")
        env[k] = v
    else:
        sys.exit("docker stand-in: unsupported option " + opt)
tag, cmd = rest[0], rest[1:]
known = open(os.path.join(state, "images")).read().split() if os.path.exists(os.path.join(state, "images")) else []
if tag not in known:
    sys.exit(f"Unable to find image '{tag}' locally")
uid, _, gid = (user or image["user"]).partition(":")
venv = os.environ["DOCKER_STAND_IN_VENV"]
b = [os.environ["BWRAP"], "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
b += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]  # first: the binds below may be in /tmp
for top in ("bin", "lib", "lib64", "sbin"):
    p = "/" + top
    if os.path.islink(p):
        b += ["--symlink", os.readlink(p), p]
    elif os.path.isdir(p):
        b += ["--ro-bind", p, p]
ro = json.loads(os.environ["DOCKER_STAND_IN_RO"])
hop = os.path.join(venv, "bin", "python")  # the venv's interpreter, through its symlinks
while os.path.islink(hop):
    target = os.readlink(hop)
    hop = os.path.normpath(os.path.join(os.path.dirname(hop), target))
    ro.append(os.path.dirname(os.path.dirname(hop)))  # the prefix holding <prefix>/bin/python
for p in dict.fromkeys(ro):
    if not p.startswith("/usr/"):
        b += ["--ro-bind", p, p]
b += ["--ro-bind", venv, venv, "--ro-bind", venv, image["venv"]]
for host, inside in volumes:
    b += ["--bind", host, inside]
b += ["--remount-ro", "/", "--unshare-user", "--uid", uid, "--gid", gid or uid, "--die-with-parent",
      "--clearenv", "--chdir", image["workdir"]]
for k, v in env.items():
    b += ["--setenv", k, v]
os.execv(b[0], b + image["entrypoint"] + cmd)
'''


def runnable_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh runnable\n(.*?)^```", text, re.S | re.M)


def test_readme_marks_its_commands_runnable() -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    joined = "\n".join(blocks)
    assert len(blocks) >= 3
    for needed in ("pip install", "docker build", "docker run", '-u "$(id -u):$(id -g)"',
                   "gitsync --version", "--one-time"):  # fmt: skip
        assert needed in joined, needed
    assert "sudo" not in joined and "<org>" not in joined


def test_every_runnable_block_works_as_pasted(
    upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    bwrap = require("bwrap", "no bwrap on PATH (Debian's bubblewrap; tests/system-deps.sh)")
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-user", "true"],
                           capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    if probe.returncode != 0:
        cannot_start("bubblewrap sandbox", f"no user namespace: {probe.stderr.strip()}")
    sha = upstream.commit({"README.md": "the synced repository\n", "src/main.py": "print(1)\n"},
                          "the commit the README syncs")  # fmt: skip

    # A copy of the repository, as a user's clone: what `pip install .` and `docker build .` see.
    work = tmp_path / "gitsync"
    work.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "Dockerfile", "requirements.lock"):
        shutil.copy2(REPO_ROOT / name, work / name)
    shutil.copytree(REPO_ROOT / "gitsync", work / "gitsync",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip

    dockerfile = parse()
    runtime = dockerfile.runtime
    image = {
        "env": runtime.env(), "user": runtime.one("USER"), "workdir": runtime.one("WORKDIR"),
        "entrypoint": exec_form(runtime.one("ENTRYPOINT")), "venv": IMAGE_VENV,
    }  # fmt: skip
    assert image["entrypoint"][0].startswith(IMAGE_VENV + "/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER.replace("#!PYTHON", f"#!{sys.executable}", 1))
    (bin_dir / "docker").chmod(0o755)
    state = tmp_path / "docker-state"
    state.mkdir()
    python_home = Path(os.path.realpath(sys.base_prefix))
    readonly = [str(p) for p in {python_home, work} if not p.is_relative_to("/usr")]

    script = "\n".join(runnable_blocks(README.read_text(encoding="utf-8")))
    script = script.replace(SHOWN_URL, git_http.url_for(upstream.bare))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "BWRAP": bwrap,
        "DOCKER_STAND_IN": str(state),
        "DOCKER_STAND_IN_IMAGE": json.dumps(image),
        "DOCKER_STAND_IN_VENV": str(work / ".venv-gitsync"),
        "DOCKER_STAND_IN_RO": json.dumps(readonly),
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
        text=True, timeout=1100, check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, f"README blocks failed:\n{out[-3000:]}\n{proc.stderr[-5000:]}"

    assert gitsync.__version__ in out, "gitsync --version"
    for root in ("git", "git-src"):  # the docker run, then the from-source run
        link = work / root / "latest"
        assert os.readlink(link) == f".worktrees/{sha}", root
        assert (link / "src" / "main.py").read_text() == "print(1)\n"
    assert "README.md" in out.split() and "src" in out.split(), "ls git/latest/"
    assert f"{sha[:7]} the commit the README syncs" in out, "git log in the worktree"
