"""Command-line behaviour: pflag syntax, exit codes, help/man/version, settings docs freshness."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitsync import __version__
from gitsync.errors import ConfigError, UsageError
from gitsync.settings.cli import help_text, man_text, parse, run_cli, split_argv
from gitsync.settings.model import KNOWN_ENV, OPTIONS, Notice

ENV = {"GITSYNC_REPO": "https://example.com/org/repo", "GITSYNC_ROOT": "/tmp/gitsync-root"}
REPO_ROOT = Path(__file__).resolve().parent.parent


def _settings_docs() -> ModuleType:
    """tools/settings_docs.py: a development tool outside the package (not in the wheel)."""
    spec = importlib.util.spec_from_file_location(
        "settings_docs", REPO_ROOT / "tools" / "settings_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_DOCS = _settings_docs()
START: str = _DOCS.START
END: str = _DOCS.END
settings_table_markdown = _DOCS.settings_table_markdown
update_settings_doc = _DOCS.update_settings_doc


def run_fail(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        run_cli(argv, env)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    code = e.value.code
    assert isinstance(code, int)
    return code, err


# --- pflag syntax --------------------------------------------------------------------------


def test_flag_forms() -> None:
    s, _ = parse(
        [
            "--period=5s",
            "--depth",
            "3",
            "--one-time",
            "--group-write=false",
            "-v",
            "4",
            "--ref=",
            "--ref",
            "main",
        ],
        ENV,
    )
    assert (s.period, s.depth, s.one_time, s.group_write, s.verbose, s.ref) == (
        5.0,
        3,
        True,
        False,
        4,
        "main",
    )


@pytest.mark.parametrize(
    "argv", [["-v=3"], ["-v3"], ["--verbose=3"], ["--verbose", "3"], ["--v=3"]]
)
def test_verbose_spellings(argv: list[str]) -> None:
    assert parse(argv, ENV)[0].verbose == 3


def test_env_verbose() -> None:
    assert parse([], {**ENV, "GITSYNC_VERBOSE": "5"})[0].verbose == 5


def test_repeatable_flags() -> None:
    s, _ = parse(
        [
            "--ssh-key-file=/a",
            "--ssh-key-file",
            "/b",
            "--git-config-add",
            "http.proxy:p",
            "--git-config=http.sslVerify:false",
        ],
        ENV,
    )
    assert s.ssh_key_files == ["/a", "/b"]
    assert s.git_config == [("http.sslVerify", "false"), ("http.proxy", "p")]


def test_last_non_repeatable_flag_wins() -> None:
    assert parse(["--period=5s", "--period=6s"], ENV)[0].period == 6


def test_positional_args_give_notice() -> None:
    s, notices = parse(["--one-time", "false"], ENV)
    assert s.one_time is True
    assert Notice("positional arguments ignored", {"args": ["false"]}) in notices


def test_env_password_flag_and_deprecated_password_flag() -> None:
    s, _ = parse(["--username=u", "--__env__GITSYNC_PASSWORD=pw"], ENV)
    assert s.password.get_secret_value() == "pw"
    s, n = parse(["--username=u", "--password", "pw2"], ENV)
    assert s.password.get_secret_value() == "pw2"
    assert Notice("deprecated setting used", {"old": "--password", "new": "--password-file"}) in n


def test_split_argv_records_spelling() -> None:
    values, specials, positional = split_argv(["--wait=1", "-h", "x", "--", "--repo=y"])
    assert values["wait"] == ["1"] and values["@wait"] == ["--wait"]
    assert specials == {"help"} and positional == ["x", "--repo=y"]


def test_cli_beats_env_and_names_flag_in_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(["--period=abc"], {**ENV, "GITSYNC_PERIOD": "5s"}, capsys)
    assert code == 1
    assert (
        err
        == 'gitsync: invalid value for --period="abc": not a duration (e.g. 10s, 1m30s, 500ms or plain seconds)\n'
    )


def test_deprecated_flags_on_cli() -> None:
    s, n = parse(
        [
            "--branch=dev",
            "--wait=2.5",
            "--timeout=30",
            "--dest=d",
            "--max-sync-failures=3",
            "--sync-hook-command=/h",
            "--ssh",
            "--change-permissions=0",
        ],
        ENV,
    )
    assert (s.ref, s.period, s.sync_timeout, s.link, s.max_failures, s.exechook_command) == (
        "dev",
        2.5,
        30,
        "d",
        3,
        "/h",
    )
    assert Notice("deprecated setting used", {"old": "--branch", "new": "--ref"}) in n


def test_deprecated_flag_overrides_newer_flag_notice() -> None:
    s, n = parse(["--ref=x", "--branch=y"], ENV)
    assert s.ref == "y"
    assert (
        Notice(
            "deprecated setting overrides newer one",
            {"old": "--branch", "new": "--ref", "value": "y"},
        )
        in n
    )


def test_credential_flag_appends_to_env() -> None:
    env = {**ENV, "GITSYNC_CREDENTIAL": '{"url":"https://a","username":"u","password":"p"}'}
    s, _ = parse(
        [
            "--credential",
            '{"url":"https://b","username":"v","password":"q"}',
            "--credential",
            '[{"url":"https://c","username":"w","password-file":"/f"}]',
        ],
        env,
    )
    assert [c.url for c in s.credentials] == ["https://a", "https://b", "https://c"]


def test_repo_userinfo_from_flag() -> None:
    s, _ = parse(["--repo=https://user:tok@github.com/o/r"], ENV)
    assert s.repo == "https://github.com/o/r" and s.username == "user"


def test_pprof_and_git_notices() -> None:
    _, n = parse(["--http-bind=:0", "--http-pprof", "--git=/usr/bin/git"], ENV)
    assert "--http-pprof is not supported by gitsync and is ignored" in [x.event for x in n]
    assert "--git is ignored: gitsync needs no git binary" in [x.event for x in n]


# --- exit codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--no-such-flag"], ["-repo=https://x"], ["--repo"], ["-x"], ["---repo=x"], ["-v"], ["-hx"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail(argv, ENV, capsys)
    assert code == 2
    assert err.startswith("gitsync: ")
    assert "Usage:" in err


def test_usage_error_raised_by_parse() -> None:
    with pytest.raises(UsageError, match="unknown flag: --nope"):
        parse(["--nope"], ENV)


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {"GITSYNC_PERIOD": "abc"}, 'GITSYNC_PERIOD="abc"'),
        (["--one-time=maybe"], {}, '--one-time="maybe"'),
        (["--depth=-1"], {}, '--depth="-1"'),
        (["--submodules=deep"], {}, '--submodules="deep"'),
        (["--git-gc=never"], {}, '--git-gc="never"'),
        (["--sync-timeout=1ms"], {}, '--sync-timeout="1ms"'),
        (["--init-period=1ms"], {}, '--init-period="1ms"'),
        (["--sync-on-signal=NOPE"], {}, '--sync-on-signal="NOPE"'),
        (["--change-permissions=0775"], {}, "--change-permissions=509"),
        (["--git-config=k"], {}, '--git-config="k"'),
        (['--git-config-add=a:"b'], {}, "--git-config-add="),
        (["--credential={}"], {}, "--credential="),
        (["--http-metrics"], {}, "--http-metrics requires --http-bind"),
        (["--username=u"], {}, '--username="u" requires'),
        (["--repo=https://u:hunter2@h/r", "--username=x"], {}, "--repo="),
        ([], {"GITSYNC_REF": ""}, 'GITSYNC_REF=""'),
        ([], {"GIT_SYNC_WAIT": "inf"}, 'GIT_SYNC_WAIT="inf"'),
        ([], {"GIT_SYNC_TIMEOUT": "1.5"}, 'GIT_SYNC_TIMEOUT="1.5"'),
        ([], {"GITSYNC_PERIOD": "a\nb"}, 'GITSYNC_PERIOD="a\\nb"'),
        (
            [],
            {"GITSYNC_EXECHOOK_COMMAND": "/x", "GITSYNC_EXECHOOK_TIMEOUT": "0"},
            'GITSYNC_EXECHOOK_TIMEOUT="0s"',
        ),
    ],
)
def test_invalid_values_exit_1_one_line(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_fail(argv, {**ENV, **env}, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("gitsync: ")
    assert needle in err
    assert "hunter2" not in err


def test_missing_root_and_repo_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_fail([], {"GITSYNC_REPO": "https://h/x"}, capsys)
    assert code == 1 and "--root" in err and "GITSYNC_ROOT" in err
    code, err = run_fail([], {"GITSYNC_ROOT": "/r"}, capsys)
    assert code == 1 and "--repo" in err


def test_password_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    _, err = run_fail([], {**ENV, "GITSYNC_PASSWORD": "hunter2"}, capsys)
    assert "GITSYNC_PASSWORD is set" in err and "hunter2" not in err
    _, err = run_fail(
        ["--credential", '{"url":"x","username":"u","password":"hunter2","bad":1}'], ENV, capsys
    )
    assert "hunter2" not in err


# --- help, man, version -----------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h", "-?", "--help=true"])
def test_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse([flag], {})  # before validation: no repo/root needed
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out == help_text()
    assert "--period <duration>, $GITSYNC_PERIOD" in out
    assert "ENVIRONMENT VARIABLES" in out
    assert out.index("ENVIRONMENT VARIABLES") < out.index("$GITSYNC_PASSWORD\n")
    assert "--branch" not in out and "--wait" not in out and "__env__" not in out


def test_help_lists_every_public_flag() -> None:
    out = help_text()
    for oi in OPTIONS.values():
        if oi.opt.hidden:
            continue
        if oi.env_only:
            assert f"${oi.opt.env[0]}" in out
        else:
            assert f"--{oi.opt.flags[0]}" in out


def test_man(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(["--man"], {})
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out == man_text()
    for section in (
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "ENVIRONMENT VARIABLES",
        "DEPRECATED",
        "EXIT STATUS",
    ):
        assert f"\n{section}" in out
    assert "$GIT_SYNC_PERIOD" in out and "--branch" in out and "$GITSYNC_BRANCH" in out


def test_version_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(["--man", "--help", "--version", "--period=bad"], {})
    assert e.value.code == 0
    assert capsys.readouterr().out == f"gitsync {__version__}\n"


def test_help_before_man(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--man", "-h"], {})
    assert capsys.readouterr().out == help_text()


def test_subprocess_entry() -> None:
    py = sys.executable
    r = subprocess.run(
        [py, "-m", "gitsync.settings.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert (r.returncode, r.stdout) == (0, f"gitsync {__version__}\n")
    r = subprocess.run(
        [py, "-m", "gitsync.settings.cli", "--bogus"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert r.returncode == 2 and "unknown flag: --bogus" in r.stderr
    env = {
        "PATH": "/usr/bin:/bin",
        "GITSYNC_REPO": "https://h/x",
        "GITSYNC_ROOT": "/tmp/x",
        "GITSYNC_PERIOD": "abc",
    }
    r = subprocess.run(
        [py, "-m", "gitsync.settings.cli"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert r.returncode == 1
    assert (
        r.stderr
        == 'gitsync: invalid value for GITSYNC_PERIOD="abc": not a duration (e.g. 10s, 1m30s, 500ms or plain seconds)\n'
    )


# --- docs/settings.md --------------------------------------------------------------------------


def test_settings_doc_table_up_to_date() -> None:
    text = (REPO_ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END)
    assert settings_table_markdown() in text[start:end], "run: make docs"
    assert _DOCS.SETTINGS_DOC == REPO_ROOT / "docs" / "settings.md", "make docs writes docs/"


def test_update_settings_doc_only_touches_markers(tmp_path: Path) -> None:
    doc = tmp_path / "settings.md"
    doc.write_text(
        f"# T\n\nintro\n\n{START}\nOLD-TABLE-TEXT\n{END}\n\nouttro\n", encoding="utf-8"
    )
    assert update_settings_doc(doc) is True
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# T\n\nintro\n\n" + START) and text.endswith(END + "\n\nouttro\n")
    assert "OLD-TABLE-TEXT" not in text and "`--period`" in text
    assert update_settings_doc(doc) is False
    fresh = tmp_path / "new.md"
    update_settings_doc(fresh)
    assert fresh.read_text(encoding="utf-8").startswith("# Settings\n")


def test_make_docs_regenerates_the_settings_doc(tmp_path: Path) -> None:
    """The command `make docs` runs, on a copy: it rewrites a stale table in place."""
    doc = tmp_path / "settings.md"
    doc.write_text(f"# Settings\n\n{START}\nSTALE\n{END}\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "settings_docs.py"), str(doc)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"updated: {doc}\n"
    assert settings_table_markdown() in doc.read_text(encoding="utf-8")


def test_table_lists_every_setting() -> None:
    table = settings_table_markdown()
    for oi in OPTIONS.values():
        assert (
            f"`--{oi.opt.flags[0]}`" if oi.opt.flags and not oi.env_only else f"`{oi.opt.env[0]}`"
        ) in table


# --- property: arbitrary env values never crash ------------------------------------------------

_ENV_NAMES = sorted(
    n for n in KNOWN_ENV if n.startswith("GITSYNC_") and n not in ("GITSYNC_REPO", "GITSYNC_ROOT")
)
_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from([*_ENV_NAMES, "GITSYNC_REPO", "GITSYNC_ROOT"]), value=_text)
def test_random_env_value_never_crashes(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    try:
        run_cli([], {**ENV, name: value})
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 1, err
        assert err.count("\n") == 1 and err.endswith("\n")
        assert name in err
        assert "Traceback" not in err
    except ConfigError:  # pragma: no cover - run_cli must translate it
        pytest.fail("ConfigError escaped run_cli")
