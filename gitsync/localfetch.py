"""Fetching from a repository on a local path (``file://`` or a plain path).

dulwich's local transport, asked for a shallow fetch, sends every object of the wanted
commit even when the target already holds most of them, so an update of one file in a
40,000-file repository would copy the whole tree. Here the objects to copy are found by
walking the wanted commits and skipping every tree the target already has (a tree in the
store comes with everything below it), then streamed into one pack, reusing the source's
deltas. The shallow boundary is the store's business (store.py computes it).
"""

from __future__ import annotations

from dulwich.errors import ObjectFormatException
from dulwich.objects import Commit, ObjectID, Tag, Tree
from dulwich.pack import write_pack_from_container
from dulwich.repo import BaseRepo, Repo

_MODE_TREE = 0o040000
_MODE_GITLINK = 0o160000
_REUSE_DELTAS_ABOVE = 2000


def missing_objects(source: BaseRepo, target: BaseRepo, wants: list[ObjectID],
                    depth: int | None) -> list[ObjectID]:
    """Objects reachable from ``wants`` (commits up to ``depth`` deep) that ``target`` lacks."""
    have = target.object_store
    src = source.object_store
    out: dict[ObjectID, None] = {}
    trees: list[ObjectID] = []
    commits: list[tuple[ObjectID, int]] = []
    for want in wants:
        obj = src[want]
        while isinstance(obj, Tag):
            if obj.id not in have:
                out[obj.id] = None
            obj = src[obj.object[1]]
        if isinstance(obj, Commit):
            commits.append((obj.id, 1))
        elif isinstance(obj, Tree):
            trees.append(obj.id)
        elif obj.id not in have:
            out[obj.id] = None
    seen: set[ObjectID] = set()
    while commits:
        sha, level = commits.pop()
        if sha in seen:
            continue
        seen.add(sha)
        commit = src[sha]
        assert isinstance(commit, Commit)
        if sha not in have:
            out[sha] = None
        trees.append(commit.tree)
        if depth is None or level < depth:
            commits.extend((p, level + 1) for p in commit.parents)
    while trees:
        tid = trees.pop()
        if tid in out or tid in have:
            continue
        out[tid] = None
        tree = src[tid]
        assert isinstance(tree, Tree)
        for entry in tree.iteritems():
            if entry.mode == _MODE_TREE:
                trees.append(entry.sha)
            elif entry.mode != _MODE_GITLINK and entry.sha not in out and entry.sha not in have:
                out[entry.sha] = None
    return list(out)


def fetch(path: str, target: BaseRepo, wants: list[ObjectID], depth: int | None) -> None:
    with Repo(path) as source:
        try:
            ids = missing_objects(source, target, wants, depth)
        except ObjectFormatException as e:
            # A malformed (hostile) tree: say which history holds it.
            named = ", ".join(w.decode() for w in wants)
            raise ObjectFormatException(f"{e} (in the history of {named})") from None
        if not ids:
            return
        f, commit, abort = target.object_store.add_pack()
        try:
            # Reusing deltas walks the whole source pack: worth it for a clone, not an update.
            write_pack_from_container(f.write, source.object_store, [(i, None) for i in ids],
                                      object_format=source.object_format,
                                      reuse_deltas=len(ids) > _REUSE_DELTAS_ABOVE)
        except BaseException:
            abort()
            raise
        commit()
