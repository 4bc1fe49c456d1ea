"""The parts of `greenloop dev` for apps that need no app: settings, logs, snapshots, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenloop.dev.app_log import TAIL_LINES, LogTail, error_line, location_of
from greenloop.dev.app_supervisor import AppConfig
from greenloop.dev.tree_snapshot import StaleSnapshot, TreeSnapshot
from greenloop.devloop.config import ConfigError, DevSettings, load_config
from greenloop.devloop.identity import build_identity
from greenloop.protocol import BuildTrigger, SetupError
from greenloop.store import Store
from tests.conftest import cli


def test_dev_settings_from_greenloop_toml(tmp_path: Path) -> None:
    (tmp_path / "greenloop.toml").write_text(
        '[dev]\napp = "uvicorn app:app --port {port}"\nready = "/healthz"\nready_timeout_s = 5\n'
    )
    dev = load_config(tmp_path).settings.dev
    assert dev.app == ["uvicorn", "app:app", "--port", "{port}"]
    config = AppConfig.of(dev)
    assert config is not None
    assert config.ready_path == "/healthz"
    assert config.ready_timeout_s == 5
    assert config.argv(8123) == ["uvicorn", "app:app", "--port", "8123"]
    # The flags win, and a ready command is not a path.
    flagged = AppConfig.of(dev, "node server.js", "curl -fs http://127.0.0.1:{port}/")
    assert flagged is not None and flagged.command == ("node", "server.js")
    assert flagged.ready_path is None
    assert AppConfig.of(DevSettings()) is None


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('[dev]\napps = "x"\n', "dev.apps"),
        ("[dev]\napp = []\n", "dev.app"),
        ('[dev]\nready = " "\n', "dev.ready"),
        ("[dev]\nready_timeout_s = true\n", "dev.ready_timeout_s"),
        ("[dev]\ndrain_timeout_s = -1\n", "dev.drain_timeout_s"),
    ],
)
def test_bad_dev_settings_name_the_key(tmp_path: Path, table: str, named: str) -> None:
    (tmp_path / "greenloop.toml").write_text(table)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(tmp_path)


def test_a_missing_app_program_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="no-such-server"):
        AppConfig(("no-such-server", "--port", "{port}")).check(tmp_path)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    AppConfig(("./run.sh",)).check(tmp_path)


def test_dev_refuses_a_missing_program_and_ready_without_an_app(project: Path) -> None:
    (project / "greenloop.toml").write_text(
        'kinds = []\n[checkers.true]\ncommand = "true"\n[dev]\napp = "no-such-server {port}"\n'
    )
    refused = cli("dev", "--port", "0", cwd=project)
    assert refused.returncode == 2
    assert "no-such-server" in refused.stderr
    (project / "greenloop.toml").write_text('kinds = []\n[checkers.true]\ncommand = "true"\n')
    refused = cli("dev", "--port", "0", "--ready", "/healthz", cwd=project)
    assert refused.returncode == 2
    assert "--ready needs an app" in refused.stderr


PYTHON_TRACEBACK = """\
INFO:     Started server process [1]
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/uvicorn/importer.py", line 19, in import_from_string
    module = importlib.import_module(module_str)
  File "{site}/pkg/app.py", line 4, in <module>
    from pkg import helper
  File "{site}/pkg/helper.py", line 2, in <module>
    LIMIT = int("three")
  File "/usr/lib/python3.11/functools.py", line 9, in wrapper
ValueError: invalid literal for int() with base 10: 'three'
"""

NODE_STACK = """\
{site}/server.js:9
        null.boom();
             ^

TypeError: Cannot read properties of null (reading 'boom')
    at Server.<anonymous> ({site}/server.js:9:14)
    at Server.emit (node:events:517:28)
    at parserOnIncoming (node:_http_server:1107:12)

Node.js v20.20.2
"""


def test_the_error_and_its_place_in_the_apps_own_code(tmp_path: Path) -> None:
    site, root = tmp_path / "site", tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "helper.py").write_text("")  # the build's file mirrors the tree's
    lines = PYTHON_TRACEBACK.format(site=site).splitlines()
    assert error_line(lines) == "ValueError: invalid literal for int() with base 10: 'three'"
    place = location_of(lines, site, root)
    # The innermost frame of the app's own code, named as the tree's file.
    assert place is not None
    assert (place.path, place.line, place.col) == (str(root / "pkg" / "helper.py"), 2, None)

    lines = NODE_STACK.format(site=site).splitlines()
    assert error_line(lines) == "TypeError: Cannot read properties of null (reading 'boom')"
    place = location_of(lines, site, root)
    # No server.js in the tree: the build's own path stays.
    assert place is not None and (place.path, place.line) == (str(site / "server.js"), 9)
    assert error_line(["all good", "ERROR:    Exception in ASGI application"]) is None
    assert location_of(["no frames here"], site, root) is None


def test_the_log_tail_keeps_the_last_lines() -> None:
    heard: list[str] = []
    tail = LogTail(heard.append)
    for n in range(TAIL_LINES + 5):
        tail.add(f"line {n}")
    assert tail.lines()[0] == "line 5" and len(tail.lines()) == TAIL_LINES
    assert len(heard) == TAIL_LINES + 5


def test_a_snapshot_is_the_checked_tree_or_nothing(project: Path, store: Store) -> None:
    (project / "app.py").write_text("print('hi')\n")
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    (project / "node_modules").mkdir()
    (project / "node_modules" / "dep.js").write_text("ignored\n")
    (project / "link").symlink_to("app.py")
    config = load_config(project)
    trigger = BuildTrigger.for_identity(build_identity(project, config))
    snapshot = TreeSnapshot(store, project)
    result = snapshot.build(trigger)
    assert result.artifact is not None
    entries = {e.path: e for e in store.get_tree(result.artifact.tree)}
    assert "app.py" in entries and "node_modules" not in entries
    assert entries["run.sh"].mode & 0o111
    assert entries["link"].kind == "symlink" and entries["link"].target == "app.py"
    out = project.parent / "out"
    store.materialize(result.artifact.tree, out)
    assert (out / "app.py").read_text() == "print('hi')\n"
    # Not recorded: the build pipeline's index must never answer with a source tree.
    assert store.index.get_artifact(trigger.input_hash) is None
    # A save after the check: the snapshot would not be what was checked.
    (project / "app.py").write_text("print('changed')\n")
    with pytest.raises(StaleSnapshot):
        snapshot.build(trigger)


def test_a_snapshot_leaves_out_what_the_settings_ignore_now(project: Path, store: Store) -> None:
    (project / "greenloop.toml").write_text('ignore = ["scratch/"]\n')
    (project / "app.py").write_text("x = 1\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "notes.txt").write_text("not part of the app\n")
    trigger = BuildTrigger.for_identity(build_identity(project, load_config(project)))
    result = TreeSnapshot(store, project).build(trigger)
    assert result.artifact is not None
    paths = {e.path for e in store.get_tree(result.artifact.tree)}
    assert {"app.py", "greenloop.toml"} <= paths
    assert not any(p.startswith("scratch") for p in paths)
