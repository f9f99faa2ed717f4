"""attributes.py without a checkout: parsing bytes as git does, and conversions that give the
same bytes however the blob is cut into chunks. What each rule must produce is pinned
against the git CLI by test_differential_checkout.py; here the streamed path (used above
8 MB) is held to the in-memory one on many more inputs than a repository can carry.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gitsync_proc import base_env, run_once
from test_differential_checkout import commit_exact

from gitsync.checkout import attributes
from gitsync.checkout.attributes import Attributes, Conversion, convert, write_converted
from gitsync.errors import UnsafeTree

_PIECES = [b"$", b"I", b"d", b":", b" ", b"\t", b"\n", b"\r", b"\0", b"x", b"\x1a", b"\x01",
           b"$Id", b"$Id:", b"$Id$", b"\r\n", "é".encode(), b"\xff"]
_CONVERSIONS = [
    Conversion(crlf=False, auto=False, ident=True, incore=False, encoding=None),
    Conversion(crlf=False, auto=False, ident=True, incore=True, encoding=None),
    Conversion(crlf=True, auto=False, ident=False, incore=False, encoding=None),
    Conversion(crlf=True, auto=True, ident=True, incore=True, encoding=None),
    Conversion(crlf=True, auto=False, ident=True, incore=False, encoding=None),
    Conversion(crlf=True, auto=False, ident=True, incore=True, encoding="UTF-16"),
    Conversion(crlf=False, auto=False, ident=False, incore=True, encoding="UTF-16LE-BOM"),
]


def _sha(data: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest().encode()


def _chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    at = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[at:cut]
        at = max(at, cut)
    yield data[at:]


@settings(max_examples=300, deadline=None)
@given(body=st.lists(st.sampled_from(_PIECES), max_size=60),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
       which=st.integers(min_value=0, max_value=len(_CONVERSIONS) - 1))
def test_streamed_conversion_equals_the_whole_blob_one(body: list[bytes], cuts: list[int],
                                                        which: int) -> None:
    data = b"".join(body)
    conv, sha = _CONVERSIONS[which], _sha(data)
    out = bytearray()

    def restart() -> None:
        del out[:]

    write_converted(lambda: _chunked(data, cuts), conv, sha, out.extend, restart, None)
    assert bytes(out) == convert(data, conv, sha)


@pytest.mark.parametrize("incore", [False, True])
def test_a_long_keyword_spills_to_an_unnamed_file_with_the_same_result(
    incore: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``$Id:`` that runs on for megabytes is held on disk, not in memory."""
    data = b"a $Id: " + b"x" * 5000 + b" $ b $Id" + b"y" * 3000 + b"$Id:" + b"z" * 4000 + b"$\n"
    conv = Conversion(crlf=True, auto=False, ident=True, incore=incore, encoding=None)
    expected = convert(data, conv, _sha(data))
    monkeypatch.setattr(attributes, "_SPILL_ABOVE", 64)
    opened: list[str | None] = []
    real = tempfile.TemporaryFile

    def spy(dir: str | None = None) -> IO[bytes]:
        opened.append(dir)
        return real(dir=dir)

    monkeypatch.setattr(attributes.tempfile, "TemporaryFile", spy)
    out = bytearray()
    write_converted(lambda: _chunked(data, list(range(0, len(data), 100))), conv, _sha(data),
                    out.extend, lambda: None, str(tmp_path))
    assert bytes(out) == expected
    assert opened and set(opened) == {str(tmp_path)}
    assert list(tmp_path.iterdir()) == []  # unnamed, and gone


def test_non_utf8_attribute_names_and_values_do_not_fail_the_checkout() -> None:
    """Issue 13: git warns about the invalid name and drops that line; a non-UTF-8 value is a
    value like any other. This raised UnicodeDecodeError, which the sync took for store damage."""
    attrs = Attributes().child(b"", b"*.txt b\xffad eol=crlf\n*.md v=\xff\xfe eol=crlf\n"
                                    b"*.enc working-tree-encoding=\xff\n")
    assert attrs.conversion(b"a.txt") is None
    md = attrs.conversion(b"a.md")
    assert md is not None and md.crlf
    enc = attrs.conversion(b"a.enc")
    assert enc is not None and convert(b"abc\n", enc, b"0" * 40) == b"abc\n"  # unknown: as stored


def test_macros_count_only_at_the_top_level() -> None:
    top = Attributes().child(b"", b"[attr]crlf2 text eol=crlf\n*.a crlf2\n")
    sub = top.child(b"sub", b"[attr]crlf2 -text\n*.b crlf2\n*.c binary\n")
    for path in (b"x.a", b"sub/x.b"):
        conv = sub.conversion(path)
        assert conv is not None and conv.crlf, path
    assert sub.conversion(b"sub/x.c") is None
    assert Attributes().child(b"", b"* eol=crlf\n*.c binary\n").conversion(b"x.c") is None


def test_text_auto_detection_is_gits_gather_stats() -> None:
    conv = Conversion(crlf=True, auto=True, ident=False, incore=True, encoding=None)
    assert convert(b"a\nb\n", conv, b"0" * 40) == b"a\r\nb\r\n"
    for binary in (b"a\n" * 5000 + b"\0", b"a\rb\n", b"a\r\nb\n", b"a\n" * 100 + b"\x01\x02",
                   b"a\nb\x1a\x1a", b""):
        assert convert(binary, conv, b"0" * 40) == binary
    assert convert(b"a\nb\x1a", conv, b"0" * 40) == b"a\r\nb\x1a"  # a last ^Z is not counted


def test_rules_beyond_the_bound_are_refused_naming_the_file() -> None:
    """Hostile input: each rule costs a compiled pattern and a match per file."""
    lfs = b"".join(b"*.x%d filter=lfs diff=lfs merge=lfs\n" % i for i in range(3000))
    assert len(Attributes().child(b"", lfs + b"* text=auto\n").rules) == 1  # lfs rules: no cost
    many = b"".join(b"*.e%d eol=crlf\n" % i for i in range(attributes.MAX_RULES + 1))
    with pytest.raises(UnsafeTree, match=r"sub/\.gitattributes .* over gitsync's limit"):
        Attributes().child(b"sub", many)


def test_an_oversized_attributes_file_is_refused_not_read(tmp_path: Path) -> None:
    bare = tmp_path / "repo.git"
    sha = commit_exact(bare, {".gitattributes": b"# padding\n" * (attributes.MAX_READ // 10 + 1),
                              "a.txt": b"a\n"})
    env = base_env(tmp_path / "home", GITSYNC_REPO=f"file://{bare}",
                   GITSYNC_ROOT=str(tmp_path / "root"), GITSYNC_LINK="link", GITSYNC_REF=sha)
    res = run_once(env, timeout=120)
    assert res.returncode != 0
    assert f".gitattributes' is {attributes.MAX_READ // 10 * 10 + 10} bytes" in res.stderr
    assert not (tmp_path / "root" / "link").exists()


def test_rules_that_convert_nothing_skip_matching_and_the_others_do_not() -> None:
    """``_converts``: rules naming no eol=crlf, ident or encoding answer None for every path
    without matching; one such value anywhere (a rule, a macro) keeps the full lookup."""
    plain = Attributes().child(b"", b"* text=auto\n*.sh text eol=lf\n*.png binary\n")
    assert not plain._converts and plain.conversion(b"a.sh") is None
    for content, path in ((b"[attr]win text eol=crlf\n*.bat win\n", b"x.bat"),
                          (b"* text=auto\n*.c ident\n", b"a.c"),
                          (b"*.txt working-tree-encoding=UTF-16\n", b"a.txt")):
        attrs = Attributes().child(b"", content)
        assert attrs._converts and attrs.conversion(path) is not None, content
