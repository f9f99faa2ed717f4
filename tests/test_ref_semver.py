"""``--ref-semver``: the newest tag in a range is synced, chosen from the advertisement alone.

End to end over the http-backend server (peeled tags advertised) and file:// (not
advertised: the tag object in the store answers): the chosen tag in logs, /status and the
``gitsync_synced_info`` metric; a poll with nothing new fetches nothing; pre-releases only
when the range names one; a bad range or no matching tag fails with a message naming them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gitsync_proc import run_once, running
from support.httpcheck import endpoint, metric, request
from support.upstream import Upstream

from gitsync.errors import ConfigError, RefNotFound
from gitsync.git.semver import Range, parse_version
from gitsync.surfaces.trigger import SEMVER_TAGS, concerns

pytestmark = pytest.mark.timeout(90)

TAGS = [*[b"refs/tags/" + t.encode() for t in (
    "v1.3.9", "v1.4.0", "1.4.5", "v1.5.0-rc.1", "v1.9.0", "v2.0.0", "v2.1.0-beta",
    "release-7", "v1.10", "latest")], b"refs/heads/v1.99.0", b"HEAD"]


@pytest.mark.parametrize(("spec", "tag"), [
    (">=1.4 <2", "v1.9.0"),
    ("^1.4", "v1.9.0"),
    ("~1.4.2", "1.4.5"),
    ("1.x", "v1.9.0"),
    ("<1.4", "v1.3.9"),
    (">=1.5.0-rc.0 <1.6", "v1.5.0-rc.1"),  # names a pre-release of 1.5.0: it may be chosen
    (">=1.5.0-rc.0", "v2.0.0"),  # a pre-release of 2.1.0 is not named: not chosen
    ("*", "v2.0.0"),
    ("^2 || ^1", "v2.0.0"),
])
def test_range_choice(spec: str, tag: str) -> None:
    chosen = Range(spec).choose(TAGS)
    assert chosen.tag == tag
    assert chosen.refname == f"refs/tags/{tag}"


def test_branches_and_non_version_tags_are_never_chosen() -> None:
    assert Range(">=1.99").choose([*TAGS, b"refs/tags/v1.99.0-x"]).tag == "v2.0.0"
    with pytest.raises(RefNotFound, match=r"no tag matches --ref-semver '>=3'") as e:
        Range(">=3").choose(TAGS)
    assert "v1.9.0, v2.0.0" in e.value.hint


def test_the_same_version_with_and_without_v_is_chosen_stably() -> None:
    refs = [b"refs/tags/v1.2.0", b"refs/tags/1.2.0"]
    assert Range("^1").choose(refs).tag == Range("^1").choose(refs[::-1]).tag == "1.2.0"
    assert parse_version("V1.2.3-rc.1+b7") is not None
    assert parse_version("v1.2") is None and parse_version("vv1.2.3") is None


@pytest.mark.parametrize("spec", [">>1", "1.2.3.4", "^x"])
def test_bad_range_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="--ref-semver"):
        Range(spec)


def test_a_pushed_tag_concerns_the_trigger() -> None:
    assert concerns(SEMVER_TAGS, "refs/tags/v9.9.9", "main")
    assert not concerns(SEMVER_TAGS, "refs/heads/main", "main")


def _tag(up: Upstream, name: str, content: str, annotated: bool) -> str:
    sha = up.commit({"file": content}, content)
    up.tag(name, sha, annotated=annotated)
    return sha


@pytest.mark.parametrize("transport", ["http", "file"])
def test_newest_tag_in_range_followed_without_refetching(
    make_upstream: type[Upstream], gs_env: dict[str, str], transport: str
) -> None:
    up = make_upstream()
    _tag(up, "v1.3.0", "1.3.0\n", annotated=True)
    v14 = _tag(up, "v1.4.0", "1.4.0\n", annotated=True)
    _tag(up, "v2.0.0", "2.0.0\n", annotated=False)
    up.commit({"file": "main moved on\n"}, "untagged")
    repo = up.http_url if transport == "http" else up.file_url
    env = {**gs_env, "GITSYNC_REPO": repo, "GITSYNC_PERIOD": "100ms",
           "GITSYNC_REF_SEMVER": ">=1.4 <2", "GITSYNC_HTTP_BIND": "127.0.0.1:0",
           "GITSYNC_HTTP_METRICS": "true"}
    with running(env) as gs:
        url = endpoint(gs, timeout=30)
        gs.wait_for_sha(v14, timeout=30)
        assert (gs.link / "file").read_text() == "1.4.0\n"

        def fetches() -> float:
            text = request(url, "/metrics").body
            return metric(text, "gitsync_phase_duration_seconds_count", phase="fetch") or 0

        def noops() -> float:
            text = request(url, "/metrics").body
            return metric(text, "git_sync_count_total", status="noop") or 0

        gs.wait_for(lambda: noops() >= 1, desc="a first no-op poll")
        before, polls = fetches(), noops()
        gs.wait_for(lambda: noops() >= polls + 5, desc="five more no-op polls")
        assert fetches() == before  # unchanged advertisement: nothing fetched

        # A pre-release and a tag outside the range change nothing; a newer one in it does.
        _tag(up, "v1.5.0-rc.1", "rc\n", annotated=True)
        _tag(up, "v3.0.0", "3\n", annotated=False)
        polls = noops()
        gs.wait_for(lambda: noops() >= polls + 3, desc="polls after the pre-release")
        assert gs.link_sha() == v14
        v15 = _tag(up, "1.5.2", "1.5.2\n", annotated=True)
        gs.wait_for_sha(v15, timeout=20)
        assert (gs.link / "file").read_text() == "1.5.2\n"

        def status() -> dict[str, object]:
            return dict(json.loads(request(url, "/status").body))

        # The link moves first; the status follows once the sync has ended.
        doc = gs.wait_for(lambda: (d := status()).get("tag") == "1.5.2" and d, desc="status")
        assert doc["ref"] == ">=1.4 <2" and doc["commit"] == v15
        text = request(url, "/metrics").body
        assert metric(text, "gitsync_synced_info", ref=">=1.4 <2", commit=v15, tag="1.5.2") == 1
        updated = [r for r in gs.logs() if r.get("msg") == "updated successfully"]
        assert [r.get("tag") for r in updated] == ["v1.4.0", "1.5.2"]
        resolved = [r for r in gs.logs() if r.get("msg") == "semver range resolved"]
        assert [(r["tag"], r["previous"]) for r in resolved] == [("v1.4.0", None),
                                                                  ("1.5.2", "v1.4.0")]
        # A moved-back range (the newest tag deleted upstream) follows the advertisement.
        up.delete_tag("1.5.2")
        gs.wait_for_sha(v14, timeout=20)


def test_no_tag_in_range_fails_naming_the_range(upstream: Upstream, gs_env: dict[str, str],
                                                root: Path) -> None:
    upstream.tag("v1.0.0")
    result = run_once({**gs_env, "GITSYNC_REF_SEMVER": "^2"}, timeout=30)
    assert result.returncode == 1
    assert "no tag matches --ref-semver '^2'" in result.stderr
    assert "v1.0.0" in result.stderr  # the hint lists what there is
    assert not (root / "link").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ({"GITSYNC_REF_SEMVER": ">>1"}, "invalid value for --ref-semver"),
    ({"GITSYNC_REF_SEMVER": "^1", "GITSYNC_REF": "main"}, "are both set: use only one"),
])
def test_config_errors_exit_before_the_root(gs_env: dict[str, str], root: Path,
                                            extra: dict[str, str], message: str) -> None:
    result = run_once({**gs_env, **extra}, timeout=30)
    assert result.returncode == 1
    assert message in result.stderr
    assert not root.exists()
