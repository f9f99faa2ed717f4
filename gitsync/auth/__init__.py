"""Authentication for the remote: HTTP credentials, TLS and proxies, SSH.

Everything runs in-process (no git, no ssh binary, no passwd entry). Credentials that can
rotate (password files, askpass, GitHub App tokens, cookie files, SSH keys) are read again
before each sync, and every secret is registered with the log redactor the moment it is
read, so it cannot reach a log line, the error file or an exception text.
"""

from __future__ import annotations
