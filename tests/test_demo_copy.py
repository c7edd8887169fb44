"""``fmwidget demo`` works on its own copy of the quickstart notebook, outside the repository.

The README runs ``fmwidget demo`` and then the test suite in the same clone, so the demo must
never change a tracked file (JupyterLab autosaves outputs into the notebook it opens) nor leave
anything new in the repository. These tests run the demo up to the point where it would start
JupyterLab (no browser, no server): as a user would with ``python -m fmwidget demo
--prepare-only``, and in-process with ``os.execv`` captured, to check the command it would run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from fmwidget import __main__ as cli

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
REPO_NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
LINE = re.compile(r"^Demo notebook: (?P<path>.+?) \((?P<why>.+)\)$", re.MULTILINE)


def _git_status() -> str:
    """``git status --porcelain`` of the repository, every untracked file listed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot check that the repository is unchanged")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} has no .git (not a clone): cannot check that it is unchanged")
    # --no-optional-locks: only look, never refresh the index (others may be using the clone).
    run = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain",
                          "--untracked-files=all"], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60)
    return run.stdout


def _assert_unchanged(before: str, after: str) -> None:
    """Fail with the entries that changed, if ``git status`` differs."""
    if after != before:
        gone = sorted(set(before.splitlines()) - set(after.splitlines()))
        new = sorted(set(after.splitlines()) - set(before.splitlines()))
        # The whole working tree is compared: an edit someone else made in this clone while
        # the test ran shows up here too, under its own path.
        pytest.fail(f"the repository's git status changed while the demo ran; "
                    f"new or changed entries: {new}; entries gone: {gone}")


def _user_env(home: Path) -> dict[str, str]:
    """The environment of a user whose home is ``home``, with no demo folder override."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.pop(cli.DEMO_DIR_ENV, None)
    # The command imports fmwidget from this checkout whether or not it is pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SRC), env.get("PYTHONPATH", "")] if p)
    return env


def _demo(*args: str, capsys) -> tuple[int, str, str]:
    rc = cli.main(["demo", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home folder (``~`` expands to it) and no ``FMWIDGET_DEMO_DIR``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(cli.DEMO_DIR_ENV, raising=False)
    return home


def test_demo_from_the_clone_leaves_the_repository_unchanged(tmp_path):
    """The README's first command, run in the clone, up to JupyterLab's start."""
    before = _git_status()
    committed = REPO_NOTEBOOK.read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run([sys.executable, "-m", "fmwidget", "demo", "--prepare-only"], cwd=REPO,
                         env=_user_env(home), capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, f"rc={run.returncode}\n{run.stdout}\n{run.stderr}"

    _assert_unchanged(before, _git_status())
    assert REPO_NOTEBOOK.read_bytes() == committed

    # Exactly one line says where the notebook is, before JupyterLab's command.
    found = LINE.findall(run.stdout)
    assert len(found) == 1, run.stdout
    copy = Path(found[0][0])
    assert run.stdout.index("Demo notebook:") < run.stdout.index("JupyterLab command"), run.stdout
    assert copy.is_absolute(), copy
    assert copy == (home / "fmwidget-demo" / "quickstart.ipynb").resolve(), run.stdout
    assert not copy.is_relative_to(REPO.resolve()), f"{copy} is inside the repository"
    assert f"--ServerApp.root_dir={copy.parent}" in run.stdout, run.stdout

    # A valid notebook, byte for byte the one the installation ships.
    source = cli.source_notebook()
    assert copy.read_bytes() == source.read_bytes()
    nbformat.validate(nbformat.read(copy, as_version=4))
    if cli.REPO_NOTEBOOK.is_file() and not cli.PACKAGED_NOTEBOOK.is_file():
        assert source == REPO_NOTEBOOK.resolve(), "an editable install copies the checkout's one"


def test_demo_execs_jupyterlab_in_the_copy_folder(home, tmp_path, monkeypatch, capsys):
    """The command it would run: the copy, its folder as root dir, the options passed on."""
    ran = {}

    class Started(Exception):
        pass

    def execv(path, argv):
        ran.update(path=path, argv=argv)
        raise Started  # the real execv never returns

    monkeypatch.setattr(cli.os, "execv", execv)
    monkeypatch.setattr(cli.os, "chdir", lambda p: ran.update(cwd=Path(p)))
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, cwd: ran.update(argv=cmd, cwd=cwd) or 0)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:  # the demo only checks that it is there: a stand-in will do
        monkeypatch.setitem(sys.modules, "jupyterlab", types.ModuleType("jupyterlab"))
    before = _git_status()
    try:
        cli.main(["--no-browser", "--port", "8123", "--IdentityProvider.token=abc"])
    except Started:
        pass
    out = capsys.readouterr().out

    folder = (home / "fmwidget-demo").resolve()
    argv = ran["argv"]
    assert argv[:4] == [sys.executable, "-m", "jupyterlab", "quickstart.ipynb"], argv
    assert f"--ServerApp.root_dir={folder}" in argv
    assert {"--no-browser", "--port=8123", "--IdentityProvider.token=abc"} <= set(argv), argv
    assert ("--allow-root" in argv) == (hasattr(os, "geteuid") and os.geteuid() == 0), argv
    assert Path(ran["cwd"]) == folder
    assert f"Demo notebook: {folder / 'quickstart.ipynb'} (" in out, out
    assert (folder / "quickstart.ipynb").read_bytes() == cli.source_notebook().read_bytes()
    _assert_unchanged(before, _git_status())


def test_an_edited_copy_is_kept_and_fresh_replaces_it(home, capsys):
    folder = home / "fmwidget-demo"
    copy = folder / "quickstart.ipynb"
    source = cli.source_notebook().read_bytes()
    committed = REPO_NOTEBOOK.read_bytes()

    rc, out, _ = _demo("--prepare-only", capsys=capsys)
    assert rc == 0 and "(a new copy" in out, out
    rc, out, _ = _demo("--prepare-only", capsys=capsys)
    assert rc == 0 and "(your copy, same as" in out, out

    # The user edits their copy (JupyterLab saving outputs does the same): it is theirs now.
    nb = json.loads(copy.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "my notes"})
    edited = json.dumps(nb, indent=1).encode()
    copy.write_bytes(edited)
    rc, out, _ = _demo("--prepare-only", capsys=capsys)
    assert rc == 0, out
    assert copy.read_bytes() == edited, "the user's edited copy was overwritten"
    [(path, why)] = LINE.findall(out)
    assert Path(path) == copy.resolve()
    assert "kept" in why and "--fresh" in why, out

    # --fresh: a new copy, and theirs kept beside it under a name the message gives.
    rc, out, _ = _demo("--prepare-only", "--fresh", capsys=capsys)
    assert rc == 0, out
    assert copy.read_bytes() == source
    backup = folder / cli.BACKUP_NAME
    assert backup.read_bytes() == edited
    assert str(backup.resolve()) in out, out
    assert sorted(p.name for p in folder.iterdir()) == sorted([cli.BACKUP_NAME, "quickstart.ipynb"])
    assert REPO_NOTEBOOK.read_bytes() == committed


def test_dir_option_and_environment_choose_the_folder(home, tmp_path, monkeypatch, capsys):
    by_env, by_option = tmp_path / "by env", tmp_path / "by-option" / "nested"
    monkeypatch.setenv(cli.DEMO_DIR_ENV, str(by_env))
    rc, out, _ = _demo("--prepare-only", capsys=capsys)
    assert rc == 0 and f"Demo notebook: {by_env.resolve() / 'quickstart.ipynb'} (" in out, out
    rc, out, _ = _demo("--prepare-only", "--dir", str(by_option), capsys=capsys)  # --dir wins
    assert rc == 0 and f"Demo notebook: {by_option.resolve() / 'quickstart.ipynb'} (" in out, out
    assert not (home / "fmwidget-demo").exists()

    monkeypatch.delenv(cli.DEMO_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _demo("--prepare-only", "--dir=relative", capsys=capsys)  # against the CWD
    assert rc == 0 and (tmp_path / "relative" / "quickstart.ipynb").is_file(), out
    rc, out, _ = _demo("--prepare-only", "--dir", "~/elsewhere", capsys=capsys)
    assert rc == 0 and (home / "elsewhere" / "quickstart.ipynb").is_file(), out


@pytest.mark.parametrize("via", ["--dir", cli.DEMO_DIR_ENV])
def test_an_unusable_folder_says_how_to_fix_it(home, tmp_path, monkeypatch, capsys, via):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "demo"  # cannot be created, whoever runs the test (root included)
    args = ["--prepare-only"]
    if via == "--dir":
        args += ["--dir", str(bad)]
    else:
        monkeypatch.setenv(cli.DEMO_DIR_ENV, str(bad))
    rc, out, err = _demo(*args, capsys=capsys)
    assert rc == 1, (out, err)
    assert "Demo notebook:" not in out, out
    assert str(bad / "quickstart.ipynb") in err, err
    assert f"(from {via})" in err, err
    assert "--dir PATH" in err and f"{cli.DEMO_DIR_ENV}=PATH" in err, err
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="needs POSIX permissions that bind (root can write anywhere)")
def test_a_read_only_folder_says_how_to_fix_it(home, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc, out, err = _demo("--prepare-only", "--dir", str(locked), capsys=capsys)
    finally:
        locked.chmod(0o700)
    assert rc == 1, (out, err)
    assert "cannot write the demo notebook" in err and "--dir PATH" in err, err
    assert list(locked.iterdir()) == []


def test_a_folder_inside_the_checkout_is_refused(home, capsys):
    if not cli.REPO_NOTEBOOK.is_file():
        pytest.skip("fmwidget is not installed from a checkout (no editable install)")
    before = _git_status()
    inside = cli.CHECKOUT / "fmwidget-demo-test-must-not-exist"
    try:
        rc, out, err = _demo("--prepare-only", "--dir", str(inside), capsys=capsys)
        assert not inside.exists(), f"the demo wrote into the checkout: {inside}"
    finally:
        shutil.rmtree(inside, ignore_errors=True)  # a failing run must not leave it behind
    assert rc == 1, (out, err)
    assert "inside the fmwidget checkout" in err and "--dir PATH" in err, err
    _assert_unchanged(before, _git_status())


def test_help_says_where_the_copy_goes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = capsys.readouterr().out
    for needed in ("~/fmwidget-demo", "--dir", cli.DEMO_DIR_ENV, "--fresh", cli.BACKUP_NAME):
        assert needed in text, (needed, text)
    assert "~/fmwidget-demo" in cli.__doc__ and cli.DEMO_DIR_ENV in cli.__doc__
