# syntax=docker/dockerfile:1
# gitsync: a drop-in for the git-sync v4 image (same ENTRYPOINT role, user 65533, HOME=/tmp, root
# /git), without git or ssh. Build: docker build -t gitsync:0.1.0 .   (docs/kubernetes.md#the-image)
#
# Base image: the official CPython "slim" image on Debian 12 (bookworm), pinned by digest (the
# multi-arch index of python:3.11.13-slim-bookworm), so a rebuild starts from the same bytes.
# - gitsync is pure Python; every dependency (dulwich, paramiko with cryptography/bcrypt/pynacl,
#   pydantic-core, pysequoia) ships manylinux wheels for it, so neither stage needs a compiler;
# - slim has no git, no ssh client, no compilers, and apt's lists are already cleaned;
# - CPython 3.11 on Debian 12 is what the test suite and the benchmarks run on, and what
#   tests/test_image.py reproduces this runtime stage with (under bubblewrap, without Docker).
# To move it: docker buildx imagetools inspect python:3.11.13-slim-bookworm (the "Digest:" line).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---- build: the locked dependencies, the gitsync wheel, and a virtual environment holding them ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY gitsync/ gitsync/
# The venv has no pip of its own (--without-pip): the build stage's pip installs into it. The
# runtime dependencies come from requirements.lock only (pip-compile --generate-hashes: exact
# versions, every file checked against its hash, wheels only; pip refuses a lock missing a
# dependency); then the gitsync wheel alone, and pip check: the lock satisfies its requirements.
RUN python -m venv --without-pip /opt/gitsync \
    && python -m pip --python /opt/gitsync/bin/python install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m pip --python /opt/gitsync/bin/python install --no-cache-dir --no-deps --no-index /wheels/gitsync_sidecar-*.whl \
    && python -m pip --python /opt/gitsync/bin/python check

# ---- runtime: Python, gitsync and its dependencies, nothing else ---------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
# Where this repository is published (the OCI source label), e.g. --build-arg SOURCE_URL=https://...
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="gitsync" \
      org.opencontainers.image.description="A pure-Python drop-in replacement for kubernetes/git-sync v4" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}"
# No package manager left behind: the base image's pip/setuptools/wheel are removed (the venv
# never had any). The user and group git-sync (65533) match git-sync's image; /etc/passwd stays
# read-only (gitsync needs no passwd entry, so --add-user is accepted as a no-op). /git is the
# volume: group 65533 with the setgid bit, so files made under any UID stay group-readable
# (fsGroup, OpenShift). /git-sync is the path of git-sync's binary, for pod specs that set
# `command: ["/git-sync"]`.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && groupadd --gid 65533 git-sync \
    && useradd --uid 65533 --gid 65533 --home-dir /tmp --shell /usr/sbin/nologin --no-create-home git-sync \
    && install -d -o 65533 -g 65533 -m 02775 /git \
    && ln -s /opt/gitsync/bin/gitsync /git-sync
COPY --from=build /opt/gitsync /opt/gitsync
# The three GITSYNC_* values are the defaults of the guide's sidecar table, set here as image
# defaults; gitsync's own built-in defaults stay git-sync's (link: the repo's last path element,
# max failures: 0), so the command itself stays a drop-in. Override any of them with -e / env:.
# PYTHONMALLOC=malloc: with pymalloc, a looping sidecar's resident set grew ~1 MB per update of
# a 40,000-file tree (43 -> 65 MB anonymous over 16 updates, Python's traced memory flat: arenas
# pinned by a few survivors each); with glibc's malloc, which gitsync trims after each sync, it
# stays flat (35 MB). Costs ~15 % CPU on a cold sync (docs/performance.md).
ENV PATH=/opt/gitsync/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONMALLOC=malloc \
    GITSYNC_ROOT=/git \
    GITSYNC_LINK=latest \
    GITSYNC_MAX_FAILURES=5
WORKDIR /tmp
USER 65533:65533
# For `docker run`: healthy while gitsync's HTTP server answers /livez; with no --http-bind
# (GITSYNC_HTTP_BIND unset) there is nothing to ask and the check passes. ":8080" means localhost.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/gitsync/bin/python", "-c", "import os,sys,urllib.request as u;b=os.environ.get('GITSYNC_HTTP_BIND') or os.environ.get('GIT_SYNC_HTTP_BIND') or '';h,_,p=b.rpartition(':');h=h.strip('[]');h={'':'127.0.0.1','0.0.0.0':'127.0.0.1','::':'::1'}.get(h,h);h='['+h+']' if ':' in h else h;sys.exit(0 if not b else u.urlopen('http://'+h+':'+p+'/livez',timeout=4).status!=200)"]
ENTRYPOINT ["/opt/gitsync/bin/gitsync"]
