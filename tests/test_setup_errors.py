"""A machine that cannot do what greenloop needs (unreadable folders, a full disk, a cache
folder that cannot be one) gets one line naming the path and the cause, exit 2, and a
store that still verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_pipeline

# root reads every folder whatever its mode; without these capabilities it is refused
# like anyone else (setpriv ships with util-linux, on every Debian).
_UNPRIVILEGED = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
)


def greenloop(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run greenloop in its own process (no daemon); its exit code and its stderr."""
    done = subprocess.run(
        [*_UNPRIVILEGED, sys.executable, "-m", "greenloop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "GREENLOOP_NO_DAEMON": "1", **(env or {})},
    )
    return done.returncode, done.stderr


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_an_unreadable_folder_outside_git_is_named_not_a_traceback(project: Path) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    (project / "main.py").write_text("x: int = 1\n")  # something for `check` to check
    secret = project / "secret"
    secret.mkdir()
    (secret / "notes.txt").write_text("private\n")
    secret.chmod(0)
    try:
        for command in ("run", "check"):
            code, stderr = greenloop(command, cwd=project)
            line = one_line(stderr)
            assert code == 2, (command, stderr)
            assert f"{secret}" in line and "Permission denied" in line, line
        # Left out of the project, it is no problem at all.
        (project / ".gitignore").write_text("secret/\n")
        code, stderr = greenloop("run", cwd=project)
        assert code == 0, stderr
    finally:
        secret.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own (tmpfs), so that it really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the file to delete to free it."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 16))
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_line_exit_2_and_the_store_still_verifies(
    small_disk: Path, project: Path
) -> None:
    env = {"GREENLOOP_CACHE_DIR": str(small_disk / "cache")}
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi", cache=gl.forever())\n',
    )
    assert greenloop("run", cwd=project, env=env)[0] == 0

    # A full disk before anything starts: SQLite cannot even open its index.
    filler = fill(small_disk)
    for command in (["run"], ["runs"], ["cache", "verify"]):
        code, stderr = greenloop(*command, cwd=project, env=env)
        line = one_line(stderr)
        assert code == 2, (command, stderr)
        assert str(small_disk / "cache") in line and "no space left" in line.lower(), line
    filler.unlink()

    # The disk fills up while the run goes on (a step takes it all).
    write_pipeline(
        project,
        f"""
        @gl.pipeline("ci", sandbox="none")  # the step fills a host disk on purpose
        def ci():
            gl.sh("head -c 8000000 /dev/zero > {small_disk}/filler; true", label="hog")
            gl.sh("echo hi", label="hi", cache=gl.forever())
        """,
    )
    code, stderr = greenloop("run", "-j", "1", cwd=project, env=env)
    line = one_line(stderr)
    assert code == 2 and "no space left" in line.lower(), stderr
    filler.unlink()

    # A new store on a full disk: the store's atomic writer cannot write its marker.
    filler = fill(small_disk)
    code, stderr = greenloop(
        "runs", cwd=project, env={"GREENLOOP_CACHE_DIR": str(small_disk / "new")}
    )
    line = one_line(stderr)
    assert code == 2 and str(small_disk / "new") in line and "No space left" in line, line
    filler.unlink()

    # Nothing was lost or half-written: the entry of the first run is still a hit.
    code, stderr = greenloop("cache", "verify", cwd=project, env=env)
    assert code == 0, stderr
    write_pipeline(
        project,
        '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi", cache=gl.forever())\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "greenloop", "run", "--format", "plain"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert done.returncode == 0 and "hi cached" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("where", ["dangling", "/proc/greenloop-cache", "/sys/greenloop-cache"])
def test_a_cache_folder_that_cannot_be_a_store_is_named(
    where: str, project: Path, tmp_path: Path
) -> None:
    write_pipeline(project, '@gl.pipeline("ci")\ndef ci():\n    gl.sh("echo hi", label="hi")\n')
    cache = Path(where)
    if where == "dangling":
        cache = tmp_path / "cache-link"
        cache.symlink_to(tmp_path / "nowhere" / "cache")
    for command in (["run"], ["runs"], ["cache", "verify"]):
        code, stderr = greenloop(*command, cwd=project, env={"GREENLOOP_CACHE_DIR": str(cache)})
        line = one_line(stderr)
        assert code == 2 and str(cache) in line, (command, stderr)
    if where == "dangling":
        assert not (tmp_path / "nowhere").exists()  # nothing made where the link points
