"""Unit tests of the settings model: value syntax, precedence, deprecated names, validation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.gitsync_proc import base_env, run_once

from gitsync.settings.model import (
    APPLIED_GIT_CONFIG_KEYS,
    KNOWN_ENV,
    OPTIONS,
    ConfigError,
    Credential,
    Notice,
    Settings,
    default_link,
    format_duration,
    load_settings,
    parse_bool,
    parse_duration,
    parse_git_config,
    parse_int,
    parse_signal,
)

BASE_ENV = {"GITSYNC_REPO": "https://example.com/org/repo", "GITSYNC_ROOT": "/tmp/gitsync-root"}


def load(env: dict[str, str] | None = None, **cli: Any) -> tuple[Settings, list[Notice]]:
    values = {k: v if isinstance(v, list) else [v] for k, v in cli.items()}
    return load_settings(values, {**BASE_ENV, **(env or {})})


def events(notices: list[Notice]) -> list[str]:
    return [n.event for n in notices]


# --- scalar syntax --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
        ("2h45m", 9900.0),
        ("0", 0.0),
        ("10s", 10.0),
        ("1000ns", 1e-6),
        ("5us", 5e-6),
        ("5\u00b5s", 5e-6),
        ("5\u03bcs", 5e-6),
        ("60", 60.0),
        ("0.5", 0.5),
        (".5s", 0.5),
        ("-1s", -1.0),
        ("+2m", 120.0),
    ],
)
def test_parse_duration_ok(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["abc", "", "10x", "1m30", "s", "inf", "nan", "1e3", " 10s", "10 s", "1..5s", "--1s"]
)
def test_parse_duration_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_matches_go() -> None:
    assert format_duration(10) == "10s"
    assert format_duration(120) == "2m0s"
    assert format_duration(0) == "0s"
    assert format_duration(0.5) == "500ms"
    assert format_duration(5400) == "1h30m0s"


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["yes", "no", "on", "tRUE", "", " true", "2"])
def test_parse_bool_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x1f", 31),
        ("010", 8),
        ("-1", -1),
        ("0", 0),
        ("42", 42),
        ("0o17", 15),
        ("0b101", 5),
        ("1_000", 1000),
        ("+7", 7),
        ("0X1F", 31),
    ],
)
def test_parse_int_ok(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    "text", ["", "abc", "1.5", "09", "0x", " 1", "1 ", "\u0661", "_1", "9223372036854775808", "--1"]
)
def test_parse_int_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text)


@pytest.mark.parametrize(
    ("text", "num"),
    [("SIGHUP", 1), ("HUP", 1), ("1", 1), ("sigusr1", int(signal.SIGUSR1)), ("", None)],
)
def test_parse_signal(text: str, num: int | None) -> None:
    assert parse_signal(text) == num


@pytest.mark.parametrize("text", ["SIGNOPE", "999", "KILL", "9", "-1"])
def test_parse_signal_bad(text: str) -> None:
    with pytest.raises(ValueError):
        parse_signal(text)


# --- git-config grammar (§1.5) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("a.b:c", [("a.b", "c")]),
        ("a.b:c,", [("a.b", "c")]),
        ("a.b:c,d.e:f", [("a.b", "c"), ("d.e", "f")]),
        (
            'http.postBuffer:10485760,sect.k1:"a val",sect.k2:another val',
            [("http.postBuffer", "10485760"), ("sect.k1", "a val"), ("sect.k2", "another val")],
        ),
        ('"http.https://host/.sslVerify":false', [("http.https://host/.sslVerify", "false")]),
        ('k:"with, comma"', [("k", "with, comma")]),
        ("k:esc\\,aped", [("k", "esc,aped")]),
        ('k:"q\\"uote"', [("k", 'q"uote')]),
        ("k:a\\nb\\tc\\\\d", [("k", "a\nb\tc\\d")]),
        ("key with space:v", [("key with space", "v")]),
        ("k:,l:v", [("k", ""), ("l", "v")]),
        ('k:""', [("k", "")]),
        ('"a\\tb":v', [("a\tb", "v")]),
        ('"url:key":v', [("url:key", "v")]),
        ('k:"v",', [("k", "v")]),
        ("k:v:w", [("k", "v:w")]),
    ],
)
def test_git_config_ok(text: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_git_config(text) == pairs


@pytest.mark.parametrize(
    "text",
    [
        "k",  # no ':'
        "k:",  # no value
        'k:"unterminated',
        '"unterminated key',
        'k:"v"x',  # junk after quoted value
        "k:bad\\qescape",
        "k:trailing\\",
        '"k"v',  # quoted key not followed by ':'
        "a:b,c",  # second key has no ':'
    ],
)
def test_git_config_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_git_config(text)


def test_git_config_setting_merges_add_and_notices_unknown_keys() -> None:
    s, notices = load(
        {"GITSYNC_GIT_CONFIG": "http.sslVerify:false,core.foo:1"},
        git_config_add=['"http.https://h/.proxy":http://p:3128', "core.foo:2"],
    )
    assert s.git_config == [
        ("http.sslVerify", "false"),
        ("core.foo", "1"),
        ("http.https://h/.proxy", "http://p:3128"),
        ("core.foo", "2"),
    ]
    assert s.git_config_add == []  # folded into git_config, never applied twice
    ignored = [n.fields["key"] for n in notices if n.event == "git config key ignored"]
    assert ignored == ["core.foo"]
    assert "http.sslverify" in APPLIED_GIT_CONFIG_KEYS


def test_git_config_error_names_setting() -> None:
    with pytest.raises(ConfigError, match=r'GITSYNC_GIT_CONFIG="k:": key .k.: no value'):
        load({"GITSYNC_GIT_CONFIG": "k:"})


# --- defaults -------------------------------------------------------------------------


def test_defaults() -> None:
    s, notices = load()
    assert s.ref == "HEAD"
    assert s.root == Path("/tmp/gitsync-root")
    assert s.link == "repo"
    assert s.period == 10 and s.sync_timeout == 120 and s.init_period is None
    assert s.max_failures == 0 and s.init_max_failures is None
    assert s.depth == 1 and s.submodules == "recursive" and s.git_gc == "always"
    assert s.ssh_key_files == ["/etc/git-secret/ssh"]
    assert s.ssh_known_hosts is True
    assert s.ssh_known_hosts_file == "/etc/git-secret/known_hosts"
    assert s.github_base_url == "https://api.github.com/"
    assert s.webhook_method == "POST" and s.webhook_success_status == 200
    assert (s.exechook_timeout, s.exechook_backoff, s.webhook_timeout, s.webhook_backoff) == (
        30,
        3,
        1,
        3,
    )
    assert s.sync_on_signal is None and s.verbose == 0
    assert (
        s.ready_max_failures == 0 and s.status_file == ".git-sync" and s.trigger_min_interval == 1
    )
    assert s.verify_mode == "none" and s.verify_keys_dir == "/etc/git-verify"
    assert s.credentials == [] and s.git_config == []
    assert notices == []


def test_settings_is_frozen() -> None:
    s, _ = load()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        s.period = 1  # type: ignore[misc]


def test_root_made_absolute_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s, _ = load({"GITSYNC_ROOT": "a/../b/./c"})
    assert s.root == tmp_path / "b" / "c"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("repo", "link"),
    [
        ("https://github.com/kubernetes/git-sync", "git-sync"),
        ("https://github.com/kubernetes/git-sync/", "git-sync"),
        ("https://github.com/kubernetes/git-sync.git", "git-sync.git"),
        ("git@github.com:org/repo.git", "repo.git"),
        ("git@host:repo", "repo"),
        ("ssh://git@host:22/a/b", "b"),
        ("file:///tmp/x/y", "y"),
        ("/local/path/", "path"),
    ],
)
def test_default_link(repo: str, link: str) -> None:
    assert default_link(repo) == link
    s, _ = load({"GITSYNC_REPO": repo})
    assert s.link == link


def test_direct_construction_gets_link_default() -> None:
    s = Settings(repo="https://h/x/y.git", root=Path("/r"))
    assert s.link == "y.git"


# --- precedence and aliases -----------------------------------------------------------


def test_cli_beats_env() -> None:
    s, _ = load({"GITSYNC_PERIOD": "5s"}, period="7s")
    assert s.period == 7


@pytest.mark.parametrize(
    ("name", "alias", "raw", "attr", "expected"),
    [
        ("repo", "GIT_SYNC_REPO", "https://h/a/b", "repo", "https://h/a/b"),
        ("root", "GIT_SYNC_ROOT", "/x", "root", Path("/x")),
        ("link", "GIT_SYNC_LINK", "l", "link", "l"),
        ("period", "GIT_SYNC_PERIOD", "3s", "period", 3.0),
        ("period", "GITSYNC_SYNC_PERIOD", "60", "period", 60.0),
        ("sync_timeout", "GIT_SYNC_SYNC_TIMEOUT", "9s", "sync_timeout", 9.0),
        ("one_time", "GIT_SYNC_ONE_TIME", "true", "one_time", True),
        ("max_failures", "GIT_SYNC_MAX_FAILURES", "4", "max_failures", 4),
        ("depth", "GIT_SYNC_DEPTH", "0", "depth", 0),
        ("submodules", "GIT_SYNC_SUBMODULES", "off", "submodules", "off"),
        (
            "sparse_checkout_file",
            "GIT_SYNC_SPARSE_CHECKOUT_FILE",
            "/s",
            "sparse_checkout_file",
            "/s",
        ),
        ("error_file", "GIT_SYNC_ERROR_FILE", "e", "error_file", "e"),
        ("touch_file", "GIT_SYNC_TOUCH_FILE", "t", "touch_file", "t"),
        ("add_user", "GIT_SYNC_ADD_USER", "1", "add_user", True),
        ("group_write", "GIT_SYNC_GROUP_WRITE", "t", "group_write", True),
        (
            "sync_on_signal",
            "GIT_SYNC_SYNC_ON_SIGNAL",
            "SIGUSR2",
            "sync_on_signal",
            int(signal.SIGUSR2),
        ),
        ("exechook_command", "GIT_SYNC_EXECHOOK_COMMAND", "/bin/x", "exechook_command", "/bin/x"),
        ("exechook_timeout", "GIT_SYNC_EXECHOOK_TIMEOUT", "5s", "exechook_timeout", 5.0),
        ("exechook_backoff", "GIT_SYNC_EXECHOOK_BACKOFF", "5s", "exechook_backoff", 5.0),
        ("webhook_url", "GIT_SYNC_WEBHOOK_URL", "http://w", "webhook_url", "http://w"),
        ("webhook_method", "GIT_SYNC_WEBHOOK_METHOD", "GET", "webhook_method", "GET"),
        (
            "webhook_success_status",
            "GIT_SYNC_WEBHOOK_SUCCESS_STATUS",
            "204",
            "webhook_success_status",
            204,
        ),
        ("webhook_timeout", "GIT_SYNC_WEBHOOK_TIMEOUT", "2s", "webhook_timeout", 2.0),
        ("webhook_backoff", "GIT_SYNC_WEBHOOK_BACKOFF", "2s", "webhook_backoff", 2.0),
        ("password_file", "GIT_SYNC_PASSWORD_FILE", "/p", "password_file", "/p"),
        ("ssh_key_files", "GIT_SYNC_SSH_KEY_FILE", "/a:/b", "ssh_key_files", ["/a", "/b"]),
        ("ssh_key_files", "GIT_SSH_KEY_FILE", "/k", "ssh_key_files", ["/k"]),
        ("ssh_known_hosts", "GIT_SYNC_KNOWN_HOSTS", "false", "ssh_known_hosts", False),
        ("ssh_known_hosts", "GIT_KNOWN_HOSTS", "false", "ssh_known_hosts", False),
        (
            "ssh_known_hosts_file",
            "GIT_SYNC_SSH_KNOWN_HOSTS_FILE",
            "/kh",
            "ssh_known_hosts_file",
            "/kh",
        ),
        ("ssh_known_hosts_file", "GIT_SSH_KNOWN_HOSTS_FILE", "/kh", "ssh_known_hosts_file", "/kh"),
        ("cookie_file", "GIT_SYNC_COOKIE_FILE", "true", "cookie_file", True),
        ("cookie_file", "GIT_COOKIE_FILE", "true", "cookie_file", True),
        ("askpass_url", "GIT_SYNC_ASKPASS_URL", "http://a", "askpass_url", "http://a"),
        ("askpass_url", "GIT_ASKPASS_URL", "http://a", "askpass_url", "http://a"),
        ("git_config", "GIT_SYNC_GIT_CONFIG", "http.proxy:x", "git_config", [("http.proxy", "x")]),
        ("git_gc", "GIT_SYNC_GIT_GC", "off", "git_gc", "off"),
        ("http_bind", "GIT_SYNC_HTTP_BIND", ":1234", "http_bind", ":1234"),
    ],
)
def test_every_legacy_alias(name: str, alias: str, raw: str, attr: str, expected: object) -> None:
    assert alias in OPTIONS[name].opt.env[1:]
    env = {alias: raw}
    if name == "password_file":
        env["GITSYNC_USERNAME"] = "u"
    if name in ("repo", "root"):
        env = {k: v for k, v in BASE_ENV.items() if OPTIONS[name].opt.env[0] != k} | env
        s, notices = load_settings({}, env)
    else:
        s, notices = load(env)
    assert getattr(s, attr) == expected
    assert (
        Notice("deprecated setting used", {"old": alias, "new": OPTIONS[name].opt.env[0]})
        in notices
    )


def test_legacy_http_flags_and_username() -> None:
    s, n = load(
        {"GIT_SYNC_HTTP_BIND": ":1", "GIT_SYNC_HTTP_METRICS": "true", "GIT_SYNC_HTTP_PPROF": "true"}
    )
    assert s.http_metrics and s.http_pprof
    assert "--http-pprof is not supported by gitsync and is ignored" in events(n)
    s, _ = load({"GIT_SYNC_USERNAME": "u", "GIT_SYNC_PASSWORD": "pw"})
    assert s.username == "u" and s.password.get_secret_value() == "pw"


def test_last_legacy_alias_wins_with_one_notice_naming_both() -> None:
    s, notices = load(
        {
            "GITSYNC_SSH_KNOWN_HOSTS_FILE": "/new",
            "GIT_SYNC_SSH_KNOWN_HOSTS_FILE": "/mid",
            "GIT_SSH_KNOWN_HOSTS_FILE": "/old",
        }
    )
    assert s.ssh_known_hosts_file == "/old"
    relevant = [n for n in notices if "GITSYNC_SSH_KNOWN_HOSTS_FILE" in n.fields.values()]
    assert relevant == [
        Notice(
            "deprecated setting overrides newer one",
            {
                "old": "GIT_SSH_KNOWN_HOSTS_FILE",
                "new": "GITSYNC_SSH_KNOWN_HOSTS_FILE",
                "value": "/old",
            },
        )
    ]


def test_legacy_alias_overrides_primary_env() -> None:
    s, notices = load({"GITSYNC_PERIOD": "5s", "GIT_SYNC_PERIOD": "7s"})
    assert s.period == 7
    assert (
        Notice(
            "deprecated setting overrides newer one",
            {"old": "GIT_SYNC_PERIOD", "new": "GITSYNC_PERIOD", "value": "7s"},
        )
        in notices
    )


def test_cli_beats_legacy_env() -> None:
    s, _ = load({"GIT_SYNC_PERIOD": "7s"}, period="2s")
    assert s.period == 2


def test_secret_value_never_in_notice() -> None:
    _, notices = load(
        {
            "GITSYNC_USERNAME": "u",
            "GITSYNC_PASSWORD": "new-secret",
            "GIT_SYNC_PASSWORD": "old-secret",
        }
    )
    assert "secret" not in repr(notices)
    assert any(n.event == "deprecated setting overrides newer one" for n in notices)


# --- deprecated flags (§1.3) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "cli", "ref"),
    [
        ({}, {}, "HEAD"),
        ({"GIT_SYNC_BRANCH": "dev"}, {}, "dev"),
        ({}, {"branch": "dev", "rev": "HEAD"}, "dev"),
        ({"GIT_SYNC_REV": "v1.0"}, {}, "v1.0"),
        ({"GITSYNC_BRANCH": "main"}, {}, "main"),
        ({"GITSYNC_REF": "x"}, {"branch": "y"}, "y"),
    ],
)
def test_branch_rev_to_ref(env: dict[str, str], cli: dict[str, str], ref: str) -> None:
    s, _ = load(env, **cli)
    assert s.ref == ref


def test_branch_and_rev_conflict_is_fatal() -> None:
    with pytest.raises(ConfigError, match=r'--branch="a" and GIT_SYNC_REV="b" conflict'):
        load({"GIT_SYNC_REV": "b"}, branch="a")


def test_deprecated_overrides_newer_notice() -> None:
    _, notices = load({"GITSYNC_REF": "x", "GITSYNC_BRANCH": "y"})
    assert (
        Notice(
            "deprecated setting overrides newer one",
            {"old": "GITSYNC_BRANCH", "new": "GITSYNC_REF", "value": "y"},
        )
        in notices
    )
    _, notices = load({"GIT_SYNC_BRANCH": "y"})
    assert Notice("deprecated setting used", {"old": "GIT_SYNC_BRANCH", "new": "GITSYNC_REF"}) in notices


@pytest.mark.parametrize(("env", "name", "value"), [
    ("GIT_SYNC_BRANCH", "branch", "y"), ("GIT_SYNC_REV", "rev", "y"), ("GIT_SYNC_DEST", "dest", "d"),
    ("GIT_SYNC_WAIT", "wait", "3"), ("GIT_SYNC_TIMEOUT", "timeout", "9"),
    ("GIT_SYNC_MAX_SYNC_FAILURES", "max_sync_failures", "2"),
    ("GIT_SYNC_HOOK_COMMAND", "sync_hook_command", "/h"),
])
def test_deprecation_notices_name_both_settings_in_one_form(env: str, name: str, value: str) -> None:
    """An environment name is replaced by an environment name, a flag by a flag (issue 14 §5)."""
    _, by_env = load({env: value})
    used = [n.fields for n in by_env if n.event.startswith("deprecated")]
    assert used and all(not str(f["new"]).startswith("-") for f in used), used
    _, by_flag = load(**{name: value})
    flagged = [n.fields for n in by_flag if n.event.startswith("deprecated")]
    assert flagged and all(str(f["new"]).startswith("--") for f in flagged), flagged


def test_wait_dest_timeout_msf_hook() -> None:
    s, n = load(
        {
            "GIT_SYNC_WAIT": "1.2345",
            "GIT_SYNC_DEST": "d",
            "GIT_SYNC_TIMEOUT": "33",
            "GIT_SYNC_MAX_SYNC_FAILURES": "5",
            "GIT_SYNC_HOOK_COMMAND": "/h",
        }
    )
    assert s.period == pytest.approx(1.234)
    assert (s.link, s.sync_timeout, s.max_failures, s.exechook_command) == ("d", 33.0, 5, "/h")
    assert events(n).count("deprecated setting used") == 5


def test_zero_deprecated_values_do_not_override() -> None:
    s, n = load(
        {"GIT_SYNC_WAIT": "0", "GIT_SYNC_TIMEOUT": "0", "GIT_SYNC_DEST": "", "GITSYNC_PERIOD": "4s"}
    )
    assert (s.period, s.sync_timeout, s.link) == (4.0, 120.0, "repo")
    assert n == []


def test_user_guide_names() -> None:
    s, _ = load(
        {
            "GITSYNC_BRANCH": "main",
            "GITSYNC_SYNC_PERIOD": "60",
            "GITSYNC_MAX_SYNC_FAILURES": "5",
            "GITSYNC_GARBAGE_COLLECTION": "true",
            "GITSYNC_ADD_USER": "true",
            "GITSYNC_DEPTH": "1",
        }
    )
    assert (s.ref, s.period, s.max_failures, s.git_gc, s.add_user) == (
        "main",
        60.0,
        5,
        "auto",
        True,
    )
    s, _ = load({"GITSYNC_GARBAGE_COLLECTION": "false", "GITSYNC_SYNC_PERIOD": "1m30s"})
    assert s.git_gc == "off" and s.period == 90


def test_deprecated_v_and_ssh_and_password_flags() -> None:
    s, n = load(v="3", ssh="true", username="u", password="pw")
    assert s.verbose == 3 and s.password.get_secret_value() == "pw"
    assert Notice("deprecated setting used", {"old": "--ssh", "new": "(none: ignored)"}) in n
    s, _ = load(verbose="2")
    assert s.verbose == 2


def test_env_password_hidden_flag() -> None:
    s, _ = load({"GITSYNC_USERNAME": "u", "GITSYNC_PASSWORD": "env"}, password=[""])
    assert s.password.get_secret_value() == "env"
    s, _ = load({"GITSYNC_USERNAME": "u", "GITSYNC_PASSWORD": "env"}, password=["flag"])
    assert s.password.get_secret_value() == "flag"


def test_change_permissions() -> None:
    load({"GIT_SYNC_PERMISSIONS": "0"})
    with pytest.raises(ConfigError, match="GIT_SYNC_PERMISSIONS=493"):
        load({"GIT_SYNC_PERMISSIONS": "0755"})


def test_git_flag_notice_and_unknown_env() -> None:
    _, n = load({"GITSYNC_GIT": "/usr/bin/git", "GITSYNC_PERIDO": "5s"})
    assert Notice("--git is ignored: gitsync needs no git binary", {"value": "/usr/bin/git"}) in n
    assert (
        Notice(
            "unknown environment variable",
            {"name": "GITSYNC_PERIDO", "suggestion": "GITSYNC_PERIOD"},
        )
        in n
    )


def test_init_max_failures_explicit() -> None:
    assert load({"GITSYNC_INIT_MAX_FAILURES": "0"})[0].init_max_failures == 0
    assert load(init_max_failures="-1")[0].init_max_failures == -1


def test_init_period_zero_means_unset() -> None:
    assert load({"GITSYNC_INIT_PERIOD": "0"})[0].init_period is None
    assert load({"GITSYNC_INIT_PERIOD": "2s"})[0].init_period == 2


# --- repeatable / structured values -------------------------------------------------------


def test_ssh_key_flag_repeatable_overrides_env() -> None:
    s, _ = load({"GITSYNC_SSH_KEY_FILE": "/e1:/e2"}, ssh_key_files=["/a", "/b"])
    assert s.ssh_key_files == ["/a", "/b"]


def test_credentials_env_then_flags() -> None:
    env = {"GITSYNC_CREDENTIAL": '[{"url":"https://a","username":"u","password":"p"}]'}
    s, _ = load(env, credentials=['{"url":"https://b","username":"v","password-file":"/f"}'])
    assert s.credentials == [
        Credential(url="https://a", username="u", password="p"),
        Credential(url="https://b", username="v", password_file="/f"),
    ]
    assert "p'" not in repr(s.credentials[0])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nope", "not a JSON"),
        ('{"username":"u","password":"p"}', "no url"),
        ('{"url":"x","password":"p"}', "no username"),
        ('{"url":"x","username":"u"}', "exactly one"),
        ('{"url":"x","username":"u","password":"p","password-file":"f"}', "exactly one"),
        ('{"url":"x","username":"u","password":"p","extra":1}', "unknown credential key"),
        ("[1]", "JSON object"),
    ],
)
def test_credential_errors(value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as e:
        load({"GITSYNC_CREDENTIAL": value})
    assert "GITSYNC_CREDENTIAL" in str(e.value)
    assert '"p"' not in str(e.value)


def test_sparse_paths_and_verify_mode() -> None:
    s, _ = load({"GITSYNC_SPARSE_PATHS": "a/b, c,,"}, verify_mode="TagAndHEAD")
    assert s.sparse_paths == ["a/b", "c"] and s.verify_mode == "tag-and-head"
    for spelled, norm in [
        ("HEAD", "head"),
        ("Tag", "tag"),
        ("none", "none"),
        ("tag-and-head", "tag-and-head"),
    ]:
        assert load(verify_mode=spelled)[0].verify_mode == norm


# --- URL userinfo ------------------------------------------------------------------------


def test_userinfo_moved_out_of_repo() -> None:
    s, _ = load({"GITSYNC_REPO": "https://me:s%40cret@github.com/org/r.git"})
    assert s.repo == "https://github.com/org/r.git"
    assert s.username == "me" and s.password.get_secret_value() == "s@cret"
    assert s.link == "r.git"


def test_userinfo_with_username_is_error_without_password_in_message() -> None:
    with pytest.raises(ConfigError) as e:
        load({"GITSYNC_REPO": "https://me:topsecret@github.com/org/r.git", "GITSYNC_USERNAME": "x"})
    assert "topsecret" not in str(e.value) and "GITSYNC_REPO" in str(e.value)


def test_ssh_user_kept() -> None:
    s, _ = load({"GITSYNC_REPO": "ssh://git@github.com/org/r.git"})
    assert s.repo == "ssh://git@github.com/org/r.git" and s.username == ""


# --- validation (§1.4) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GITSYNC_REF": ""}, 'GITSYNC_REF="": must not be empty'),
        ({"GITSYNC_DEPTH": "-1"}, 'GITSYNC_DEPTH="-1"'),
        ({"GITSYNC_SUBMODULES": "deep"}, 'GITSYNC_SUBMODULES="deep": must be one of'),
        ({"GITSYNC_GIT_GC": "sometimes"}, 'GITSYNC_GIT_GC="sometimes"'),
        ({"GITSYNC_PERIOD": "5ms"}, 'GITSYNC_PERIOD="5ms": must be at least 10ms'),
        ({"GITSYNC_PERIOD": "abc"}, 'GITSYNC_PERIOD="abc": not a duration'),
        ({"GITSYNC_INIT_PERIOD": "1ms"}, "GITSYNC_INIT_PERIOD"),
        ({"GITSYNC_SYNC_TIMEOUT": "0"}, "GITSYNC_SYNC_TIMEOUT"),
        ({"GITSYNC_SYNC_ON_SIGNAL": "SIGFOO"}, 'GITSYNC_SYNC_ON_SIGNAL="SIGFOO"'),
        (
            {"GITSYNC_EXECHOOK_COMMAND": "/x", "GITSYNC_EXECHOOK_TIMEOUT": "500ms"},
            "GITSYNC_EXECHOOK_TIMEOUT",
        ),
        (
            {"GITSYNC_EXECHOOK_COMMAND": "/x", "GITSYNC_EXECHOOK_BACKOFF": "0"},
            "GITSYNC_EXECHOOK_BACKOFF",
        ),
        (
            {
                "GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND": "/x",
                "GITSYNC_PRE_PUBLISH_EXECHOOK_TIMEOUT": "0.5",
            },
            "GITSYNC_PRE_PUBLISH_EXECHOOK_TIMEOUT",
        ),
        (
            {"GITSYNC_WEBHOOK_URL": "http://x", "GITSYNC_WEBHOOK_TIMEOUT": "10ms"},
            "GITSYNC_WEBHOOK_TIMEOUT",
        ),
        (
            {"GITSYNC_WEBHOOK_URL": "http://x", "GITSYNC_WEBHOOK_BACKOFF": "10ms"},
            "GITSYNC_WEBHOOK_BACKOFF",
        ),
        (
            {"GITSYNC_WEBHOOK_URL": "http://x", "GITSYNC_WEBHOOK_SUCCESS_STATUS": "-2"},
            "GITSYNC_WEBHOOK_SUCCESS_STATUS",
        ),
        ({"GITSYNC_USERNAME": "u"}, "GITSYNC_USERNAME"),
        (
            {"GITSYNC_USERNAME": "u", "GITSYNC_PASSWORD": "p", "GITSYNC_PASSWORD_FILE": "/f"},
            "GITSYNC_PASSWORD is set",
        ),
        ({"GITSYNC_PASSWORD": "p"}, "GITSYNC_PASSWORD is set but --username"),
        ({"GITSYNC_PASSWORD_FILE": "/f"}, "GITSYNC_PASSWORD_FILE"),
        (
            {"GITSYNC_GITHUB_APP_APPLICATION_ID": "1", "GITSYNC_GITHUB_APP_CLIENT_ID": "c"},
            "both set",
        ),
        ({"GITSYNC_GITHUB_APP_APPLICATION_ID": "1"}, "installation-id"),
        (
            {"GITSYNC_GITHUB_APP_CLIENT_ID": "c", "GITSYNC_GITHUB_APP_INSTALLATION_ID": "2"},
            "PRIVATE_KEY",
        ),
        (
            {
                "GITSYNC_GITHUB_APP_CLIENT_ID": "c",
                "GITSYNC_GITHUB_APP_INSTALLATION_ID": "2",
                "GITSYNC_GITHUB_APP_PRIVATE_KEY": "k",
                "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": "/k",
            },
            "use only one",
        ),
        (
            {
                "GITSYNC_GITHUB_APP_CLIENT_ID": "c",
                "GITSYNC_GITHUB_APP_INSTALLATION_ID": "2",
                "GITSYNC_GITHUB_APP_PRIVATE_KEY": "k",
                "GITSYNC_USERNAME": "u",
                "GITSYNC_PASSWORD": "p",
            },
            "cannot be combined",
        ),
        ({"GITSYNC_GITHUB_APP_INSTALLATION_ID": "2"}, "GITSYNC_GITHUB_APP_INSTALLATION_ID=2"),
        ({"GITSYNC_HTTP_METRICS": "true"}, "GITSYNC_HTTP_METRICS requires --http-bind"),
        ({"GITSYNC_HTTP_PPROF": "true"}, "GITSYNC_HTTP_PPROF requires --http-bind"),
        ({"GITSYNC_RELAY_TAGS": "true"}, "GITSYNC_RELAY_TAGS requires --relay-bind"),
        ({"GITSYNC_RELAY_FANOUT_DNS": "pods:8080"}, "GITSYNC_RELAY_FANOUT_DNS requires --relay-bind"),
        ({"GITSYNC_REPO": "/"}, 'GITSYNC_REPO="/": the link named after it'),
        ({"GITSYNC_ONE_TIME": "yes"}, 'GITSYNC_ONE_TIME="yes": not a boolean'),
        ({"GITSYNC_MAX_FAILURES": "many"}, 'GITSYNC_MAX_FAILURES="many": not an integer'),
        ({"GITSYNC_VERIFY_MODE": "strict"}, "GITSYNC_VERIFY_MODE"),
        ({"GITSYNC_REPO": "http://[bad/x"}, "GITSYNC_REPO"),
        ({"GITSYNC_STALE_WORKTREE_TIMEOUT": "-1s"}, "GITSYNC_STALE_WORKTREE_TIMEOUT"),
    ],
)
def test_validation_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(env)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg
    assert "topsecret" not in msg


def test_hook_and_webhook_limits_only_checked_when_set() -> None:
    s, _ = load(
        {
            "GITSYNC_EXECHOOK_TIMEOUT": "0.1",
            "GITSYNC_WEBHOOK_TIMEOUT": "0.1",
            "GITSYNC_WEBHOOK_SUCCESS_STATUS": "-5",
        }
    )
    assert s.exechook_timeout == pytest.approx(0.1)


def test_webhook_minus_one_means_zero() -> None:
    s, _ = load({"GITSYNC_WEBHOOK_URL": "http://x", "GITSYNC_WEBHOOK_SUCCESS_STATUS": "-1"})
    assert s.webhook_success_status == 0


def test_github_app_ok() -> None:
    s, _ = load(
        {
            "GITSYNC_GITHUB_APP_APPLICATION_ID": "0x10",
            "GITSYNC_GITHUB_APP_INSTALLATION_ID": "7",
            "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": "/k",
        }
    )
    assert (s.github_app_application_id, s.github_app_installation_id) == (16, 7)


def test_missing_repo_and_root() -> None:
    with pytest.raises(ConfigError, match="--repo"):
        load_settings({}, {"GITSYNC_ROOT": "/r"})
    with pytest.raises(ConfigError, match="--root"):
        load_settings({}, {"GITSYNC_REPO": "https://h/x"})


def test_password_value_never_in_error() -> None:
    with pytest.raises(ConfigError) as e:
        load({"GITSYNC_PASSWORD": "topsecret"})
    assert "topsecret" not in str(e.value)


def test_every_env_name_is_known_and_unique() -> None:
    names = [e for o in OPTIONS.values() for e in o.opt.env]
    assert len(names) == len(set(names))
    assert set(names) == KNOWN_ENV
    flags = [f for o in OPTIONS.values() for f in o.opt.flags]
    assert len(flags) == len(set(flags))
    for o in OPTIONS.values():
        assert o.help, o.name


@pytest.mark.parametrize("link", [".git", ".git/x", ".git-sync", ".worktrees", ".worktrees/x",
                                  ".gitsync.lock", ".", "..", "/", "sub/../.git"])
def test_a_link_on_gitsyncs_own_names_is_a_config_error(link: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = base_env(tmp_path / "home", GITSYNC_REPO="file:///nowhere", GITSYNC_ROOT=str(root),
                   GITSYNC_LINK=link)
    res = run_once(env)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "GITSYNC_LINK" in res.stderr, res.stderr
    assert "choose another name" in res.stderr
    assert not root.exists(), "a bad config touched the root"


# --- pydantic does the work; its words never reach the user (issue 13 §5) -----------------


_PYDANTIC_WORDS = ("Input should", "Value error", "validation error", "pydantic", "errors.pydantic.dev")


@pytest.mark.parametrize("name", [n for n, o in OPTIONS.items() if o.env and o.kind != "str"])
def test_bad_values_read_as_gitsync_messages(name: str) -> None:
    """Every typed setting, given junk: one line naming the setting, no pydantic text."""
    env_name = OPTIONS[name].env[0]
    failed = []
    for junk in ("junk\u00e9", "-5", "99999999999999999999", "0.001"):
        try:
            load({env_name: junk})
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg and not any(w in msg for w in _PYDANTIC_WORDS), msg
            assert env_name in msg, msg
            failed.append(junk)
    if OPTIONS[name].kind not in ("secret", "pathlist", "csv", "gitconfig"):
        assert "junk\u00e9" in failed


def test_overridden_bad_values_are_still_errors() -> None:
    """git-sync parses every environment value it reads, even one a flag overrides, and
    every occurrence of a flag."""
    with pytest.raises(ConfigError, match=r'GITSYNC_DEPTH="x": not an integer'):
        load({"GITSYNC_DEPTH": "x"}, depth="1")
    with pytest.raises(ConfigError, match=r'GITSYNC_SUBMODULES="deep": must be one of'):
        load({"GITSYNC_SUBMODULES": "deep"}, submodules="off")
    with pytest.raises(ConfigError, match=r'--verify-mode="x": must be one of'):
        load(verify_mode=["x", "head"])


def test_range_limits_name_the_spelling_used() -> None:
    with pytest.raises(ConfigError, match=r'^invalid value for --jitter="1.5": must be between 0 and 1$'):
        load(jitter="1.5")
    with pytest.raises(ConfigError, match=r'^invalid value for --period="1ms": must be at least 10ms$'):
        load({"GITSYNC_PERIOD": "5s"}, period="1ms")
    with pytest.raises(ConfigError, match=r'^invalid value for --repo="": must not be empty$'):
        load(repo="")


def test_names_follow_git_syncs_convention() -> None:
    """The marker spells only irregular names; the rest are derived from the field name."""
    sync_timeout, ref = OPTIONS["sync_timeout"], OPTIONS["ref"]
    assert sync_timeout.flags == ("sync-timeout",)
    assert sync_timeout.env == ("GITSYNC_SYNC_TIMEOUT", "GIT_SYNC_SYNC_TIMEOUT")
    assert (ref.flags, ref.env) == (("ref",), ("GITSYNC_REF",))
    assert OPTIONS["ssh_key_files"].flags == ("ssh-key-file",)


def test_help_does_not_build_the_model_schema() -> None:
    """--help and --man read the declarations only; validation is built on first use."""
    code = ("from gitsync.settings import cli; cli.help_text(); cli.man_text(); "
            "from gitsync.settings.model import Settings; print(Settings.__pydantic_complete__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.stdout.strip() == "False"
