"""``.gitattributes`` parsing and the checkout conversions it selects (checkout/attributes.py).

Input: a top-level attributes file, one for ``sub/``, and a blob (cut at SEP). The worktree's
calls are made: ``Attributes.child`` per directory, ``conversion`` per path, then the blob
converted both in memory (``convert``) and streamed in chunks with a spill directory
(``write_converted``); the two must agree byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fuzz.contract import ContractViolation, Scratch
from fuzz.targets import parts
from gitsync.checkout import attributes
from gitsync.checkout.attributes import Attributes

BUDGET = 5.0
MAX_LEN = 64 << 10
_PATHS = (b"README.md", b"src/a.c", b"x.bat", b"sub/x.txt", b"sub/deep/file.sh", b"sub/a.ps1",
          b"tests/resources/crlf/all-crlf", b"docs/a b.md", b"sub/\xc3\xa9t\xc3\xa9.txt")
_SHA = b"0123456789abcdef0123456789abcdef01234567"


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        top_file, sub_file, blob = parts(data, 3)
        top = Attributes().child(b"", top_file)
        sub = top.child(b"sub", sub_file)
        spill = str(scratch.fresh())
        for path in _PATHS:
            conv = (sub if path.startswith(b"sub/") else top).conversion(path)
            if conv is None:
                continue
            whole = attributes.convert(blob, conv, _SHA)
            out: list[bytes] = []

            def source() -> Iterator[bytes]:
                step = max(1, len(blob) // 3)
                return iter([blob[i:i + step] for i in range(0, len(blob), step)])

            attributes.write_converted(source, conv, _SHA, out.append, out.clear, spill)
            if b"".join(out) != whole:
                raise ContractViolation(f"{path!r}: streamed conversion differs from in-memory")

    return run
