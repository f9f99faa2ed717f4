"""Which transport a URL uses, and whether git would let it be used (``protocol.allow``).

A repository chooses its submodules' URLs. git refuses, since 2.38.1 (CVE-2022-39253), to
fetch a submodule over the file transport unless ``protocol.file.allow=always``: otherwise a
superproject could name another repository on the sidecar's disk (another sync's store on a
shared volume) and publish its files. The rules are git's (git-config ``protocol.allow``):
http, https, git and ssh are always allowed; ``ext`` never; everything else, file included,
only for a URL the user gave (the superproject), not one a repository gave (a submodule).
``protocol.<name>.allow`` and ``protocol.allow`` change the default, and
``GIT_ALLOW_PROTOCOL`` (a colon-separated list) allows only what it names, as in git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from dulwich.config import ConfigDict

from gitsync.errors import Refused

_SAFE = {"http", "https", "git", "ssh"}
_SUPPORTED = _SAFE | {"file"}  # gitsync runs no helper programs (ext::, fd::, remote-*)
_HELPER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.-]*)::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}


def transport(url: str) -> str:
    """git's name for the transport of ``url``: ``file`` for a path, ``ssh`` for ``host:path``,
    the helper's name for ``<helper>::<address>`` (``ext``, ``fd``, ...)."""
    helper = _HELPER.match(url)
    if helper:
        return helper.group(1).lower()
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        return "ssh" if name in _SSH_SCHEMES else name
    head = url.split("/", 1)[0]
    if ":" in head:  # scp-like user@host:path (a path with a colon before any slash)
        return "ssh"
    return "file"


def _policy(config: ConfigDict, name: str) -> str:
    for section in ((b"protocol", name.encode()), (b"protocol",)):
        try:
            return config.get(section, b"allow").decode().strip().lower()
        except KeyError:
            continue
    if name in _SAFE:
        return "always"
    return "never" if name == "ext" else "user"


def check(url: str, shown: str, config: ConfigDict, *, from_user: bool,
          env: Mapping[str, str] | None = None) -> None:
    """Refuse ``url`` (shown as ``shown``) when git would not use its transport here.

    ``from_user``: the URL comes from the operator (the repository to sync), not from a
    repository's content (a submodule's ``.gitmodules``)."""
    name = transport(url)
    if name not in _SUPPORTED:
        raise Refused(f"transport '{name}' not supported for URL {shown}")
    allowed_list = (os.environ if env is None else env).get("GIT_ALLOW_PROTOCOL")
    if allowed_list is not None:
        ok = name in allowed_list.split(":")
    else:
        policy = _policy(config, name)
        ok = policy == "always" or (policy == "user" and from_user)
    if not ok:
        where = "" if from_user else "submodule "
        hint = f"--git-config protocol.{name}.allow:always allows it"
        raise Refused(f"transport '{name}' not allowed for {where}URL {shown}", hint=hint)
