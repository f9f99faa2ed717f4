#!/bin/sh
# Installs the Debian packages the test servers need, only when missing (run by `make test`).
set -eu
missing=""
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v git >/dev/null 2>&1 || missing="$missing git"
[ -x /usr/lib/git-core/git-http-backend ] || missing="$missing git"
[ -x /usr/lib/git-core/git-daemon ] || missing="$missing git"
command -v gpg >/dev/null 2>&1 || missing="$missing gnupg"
command -v git-lfs >/dev/null 2>&1 || missing="$missing git-lfs"  # test_lfs's differential case
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
