"""Reading tree objects from a repository that may be hostile.

A commit can hold one tree with a million entries: dulwich parses that into some 550 MB of
Python objects, and the container's memory limit kills the sidecar in a loop. A tree's entry
count is checked on its raw bytes before it is parsed; GitHub's tree API stops at the same
100,000 entries, so no repository that works there is refused here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from dulwich.errors import ObjectFormatException
from dulwich.object_store import BaseObjectStore
from dulwich.objects import ObjectID, Tree, TreeEntry, object_class, parse_tree

from gitsync.errors import CorruptObject, MissingObject, UnsafeTree
from gitsync.git import dulwich_private

MAX_ENTRIES = 100_000
# The shortest entry: mode "40000", a space, a one-byte name, NUL, a 20-byte SHA.
_SHORTEST_ENTRY = 28


def show_path(path: bytes, limit: int = 300) -> str:
    """A tree path for an error message: readable, escaped, and short (a hostile path is not)."""
    text = path.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _entry_count(raw: bytes, pos: int) -> int:
    n = 0
    find, end = raw.find, len(raw)
    while pos < end:
        nul = find(b"\0", pos)
        if nul < 0:
            break
        pos = nul + 21
        n += 1
    return n


def _raw(objects: BaseObjectStore, sha: ObjectID) -> tuple[int, bytes, int]:
    """(type, data, where the content starts in data): dulwich parses a loose object just to
    return its bytes, which is the 550 MB this module exists to avoid."""
    path = dulwich_private.loose_path(objects, sha)
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = zlib.decompress(f.read())
        except FileNotFoundError:
            pass
        except zlib.error as e:
            raise CorruptObject(f"loose object {sha.decode()} is corrupt: {e}") from None
        else:
            end = data.find(b"\0", 0, 64)
            cls = object_class(data[:end].partition(b" ")[0])
            return (cls.type_num if cls else 0), data, end + 1
    kind_num, raw = objects.get_raw(sha)
    return kind_num, raw, 0


def read(objects: BaseObjectStore, sha: ObjectID, path: bytes) -> Tree:
    """The tree ``sha`` found at ``path`` (b"" for a commit's root).

    MissingObject when it is not there, CorruptObject when its bytes do not parse: whether
    the store or the server is to blame is the syncer's question (errors.py)."""
    kind, raw = _content(objects, sha, path)
    parse(kind, raw, sha, path)
    try:
        tree = Tree.from_raw_string(Tree.type_num, raw, sha)
    except ObjectFormatException as e:
        raise CorruptObject(f"tree {sha.decode()} at {show_path(path or b'/')} is malformed: {e}") from None
    assert isinstance(tree, Tree)
    return tree


def read_entries(objects: BaseObjectStore, sha: ObjectID, path: bytes) -> list[TreeEntry]:
    """``read``'s tree as ``parse`` gives it."""
    return parse(*_content(objects, sha, path), sha, path)


def _content(objects: BaseObjectStore, sha: ObjectID, path: bytes) -> tuple[int, bytes]:
    try:
        kind, data, start = _raw(objects, sha)
    except KeyError:
        raise missing(sha, path) from None
    return kind, data[start:] if start else data


def parse(kind: int, raw: bytes, sha: ObjectID, path: bytes) -> list[TreeEntry]:
    """The entries of the object ``raw`` (its content, of type ``kind``), checked as a tree
    found at ``path``: in the tree's order, which the check makes git's sorted order.

    A checkout reads thousands of trees: it parses them once here rather than through a
    dulwich ``Tree`` (which parses again, and sorts again on every iteration)."""
    where = show_path(path or b"/")
    if kind != Tree.type_num:
        raise UnsafeTree(f"{sha.decode()} at {where} is not a tree")
    if len(raw) >= _SHORTEST_ENTRY * MAX_ENTRIES and (n := _entry_count(raw, 0)) > MAX_ENTRIES:
        raise UnsafeTree(f"tree {where} has {n} entries, more than the "
                         f"{MAX_ENTRIES} gitsync accepts in one directory")
    try:
        entries = [TreeEntry(name, mode, ObjectID(child)) for name, mode, child in parse_tree(raw, 20)]
    except ObjectFormatException as e:
        raise CorruptObject(f"tree {sha.decode()} at {where} is malformed: {e}") from None
    _check_entries(entries, path)
    return entries


def missing(sha: ObjectID, path: bytes) -> MissingObject:
    """The error for a tree that is not there."""
    return MissingObject(f"tree {sha.decode()} at {show_path(path or b'/')}")


# What git fsck accepts (100664 is an old git's regular file, accepted unless fsck is strict).
_MODES = frozenset({0o100644, 0o100755, 0o100664, 0o120000, 0o040000, 0o160000})


def _check_entries(entries: Sequence[tuple[bytes, int, bytes]], path: bytes) -> None:
    """git fsck's badFilemode and treeNotSorted: a hostile tree, refused like an unsafe path.

    dulwich sorts entries when it iterates, so an unsorted tree would be written as if it
    were sorted, and git would read the same tree differently."""
    previous = b""
    for name, mode, _sha in entries:
        if mode not in _MODES:
            raise UnsafeTree(f"tree entry {show_path(path + name)} has the invalid mode {mode:o}")
        key = name + b"/" if mode == 0o040000 else name
        if key < previous:
            raise UnsafeTree(f"tree {show_path(path or b'/')} is not sorted "
                             f"({show_path(previous.rstrip(b'/'))} before {show_path(name)})")
        previous = key
