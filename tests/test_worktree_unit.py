"""Path checks and the index file, without a remote."""

import os
import subprocess

import pytest

from gitsync.checkout.worktree import check_name
from gitsync.errors import UnsafeTree
from gitsync.git.gitindex import IndexEntry, read_index, write_index


@pytest.mark.parametrize(
    "name",
    [b"..", b".", b"", b".git", b".GIT", b".Git.", b".git ", b"git~1", b"GIT~1", b"a/b", b"a\0b",
     ".g\u200cit".encode()],
)
def test_hostile_names_are_refused(name):
    with pytest.raises(UnsafeTree):
        check_name(name, 0o100644)


def test_symlinked_gitmodules_is_refused():
    with pytest.raises(UnsafeTree):
        check_name(b".gitmodules", 0o120000)


@pytest.mark.parametrize("name", [b".gitignore", b"git", b".github", b"..foo", b"a.git"])
def test_ordinary_names_pass(name):
    check_name(name, 0o100644)


def test_index_round_trip_is_read_by_git(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello\n")
    sha = subprocess.run(["git", "hash-object", "-w", str(f)], check=True, capture_output=True,
                         text=True).stdout.strip().encode()
    entry = IndexEntry.from_stat(b"hello.txt", 0o100644, sha, os.lstat(f))
    write_index(tmp_path / ".git" / "index", [entry])
    back = read_index(tmp_path / ".git" / "index")
    assert back[b"hello.txt"].sha == sha
    assert back[b"hello.txt"].unchanged(os.lstat(f))
    out = subprocess.run(["git", "-C", str(tmp_path), "ls-files", "-s"], check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["100644", sha.decode(), "0", "hello.txt"]
    f.write_bytes(b"changed\n")
    assert not back[b"hello.txt"].unchanged(os.lstat(f))
