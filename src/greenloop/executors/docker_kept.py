"""Containers kept running between a chain's docker steps.

Starting a container is the engine's slowest part of a step (~250 ms here, most
of it the network). So a step whose snapshot is committed runs in a container
*booted to wait* (``sh`` reading a stdin that never closes), its command an exec
in it. When the command ends, the same exec kills every process it left and
checks the container against what a container booted from its snapshot would
give the next step. The container is committed as the snapshot, and, when it is
as a fresh one, kept for the child, whose command becomes the next exec: no
create, no start, no network set up again.

What a fresh container would not carry over, and what the check makes sure of:

- processes: every one is killed (``kill -KILL -1``), and none may be left;
- ``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/hostname`` (the engine's, never in
  a snapshot): as they were at boot;
- the entries of ``/dev``, ``/dev/shm``, ``/dev/mqueue`` and ``/dev/pts`` (memory,
  never in a snapshot), with their types, modes, owners and device numbers, and the
  files the engine makes at each start (``/.dockerenv``, ``/run/.containerenv``):
  as at boot (``ls -lan``; an image without ``ls`` never keeps a container);
- System V IPC objects: none;
- sockets (a server's in TIME_WAIT, say): none on a port below the ephemeral range,
  which a step's server could then not bind again;
- the secrets' tmpfs: emptied, and found empty;
- the environment, the working folder and the umask are each exec's own.

A container that fails the check (or whose step failed, timed out or was
cancelled) goes, and the child boots its own from the snapshot, as before.
Only a run that is open keeps containers (:meth:`Kept.open`), and its end
removes them (:meth:`Kept.close`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from greenloop.protocol.executor import SECRETS_DIR

BOOT_DIR = "/.greenloop/boot"
"""Where a kept container's boot keeps what the check compares with: a tmpfs, never
committed."""

# A POSIX sh and what the prelude needs besides (rm), plus ls. `copy` reads a text
# file with `read`, as `cat` would print it.
_COPY = """copy() { while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done; }"""
# Each entry's type, mode, owner and device numbers, and the files the engine makes
# at every start (a step may remove them; a fresh container has them again).
_LIST = "ls -lan /dev /dev/shm /dev/mqueue /dev/pts /.dockerenv /run/.containerenv 2>/dev/null"
_SECRETS_LEFT = f"{SECRETS_DIR}/* {SECRETS_DIR}/.[!.]* {SECRETS_DIR}/..?*"

BOOT = f"""\
{_COPY}
for f in hosts resolv.conf hostname; do
  if [ -f /etc/$f ]; then copy </etc/$f >{BOOT_DIR}/$f; fi
done
{_LIST} >{BOOT_DIR}/dev
echo >{BOOT_DIR}/ready
read _
"""
"""The command a kept container boots with: note what the check compares, then wait."""

CHECK = f"""\
code=$?
kill -KILL -1 2>/dev/null
fresh=yes
if [ -d {SECRETS_DIR} ]; then
  rm -rf -- {_SECRETS_LEFT} 2>/dev/null
  for f in {_SECRETS_LEFT}; do
    if [ -e "$f" ] || [ -L "$f" ]; then fresh=no; fi
  done
fi
[ -f {BOOT_DIR}/ready ] && command -v ls >/dev/null 2>&1 || fresh=no
for p in /proc/[0-9]*; do
  case ${{p#/proc/}} in 1|$$) ;; *) fresh=no ;; esac
done
{_COPY}
for f in hosts resolv.conf hostname; do
  if [ -f /etc/$f ]; then
    [ "$(copy </etc/$f)" = "$(copy <{BOOT_DIR}/$f)" ] || fresh=no
  fi
done
[ "$({_LIST})" = "$(copy <{BOOT_DIR}/dev)" ] || fresh=no
for f in shm msg sem; do
  if [ -r /proc/sysvipc/$f ]; then
    n=0
    while read -r l; do n=$((n + 1)); done </proc/sysvipc/$f
    [ "$n" -le 1 ] || fresh=no
  fi
done
low=32768
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
fi
for f in tcp tcp6 udp udp6; do
  if [ -r /proc/net/$f ]; then
    while read -r _ local _; do
      port=${{local##*:}}
      case $port in *[!0-9A-Fa-f]*|"") continue ;; esac
      [ $((0x$port)) -ge "$low" ] || fresh=no
    done </proc/net/$f
  fi
done
printf '%s' "$marker$fresh"
exit $code
"""
"""What an exec in a kept container runs after its command: kill what is left, check,
and write the verdict (``yes``/``no`` after ``$marker``) as the last bytes of stdout."""

_LIMIT = 8
"""Containers kept at most: one per chain that goes on; the oldest goes first."""


class Kept:
    """The running containers a run keeps for the next step of their chains, by the
    snapshot they were committed to and the shape the next step needs (its mounts
    and network: an exec cannot change them)."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._runs = 0
        self._kept: dict[tuple[str, str], str] = {}

    @property
    def open_runs(self) -> int:
        """How many runs are open: containers are kept only while one is."""
        return self._runs

    def open(self) -> None:
        """A run begins: containers may be kept until it ends."""
        with self._lock:
            self._runs += 1

    def keep(self, snapshot: str, shape: str, container: str) -> bool:
        """Keep ``container``, committed to ``snapshot``, for a step of ``shape`` that
        boots from it; False when no run is open (the caller removes it then)."""
        with self._lock:
            if self._runs == 0:
                return False
            self._kept[snapshot, shape] = container
            oldest = next(iter(self._kept)) if len(self._kept) > _LIMIT else None
            gone = self._kept.pop(oldest) if oldest is not None else None
        if gone is not None:
            self._remove([gone])
        return True

    def take(self, snapshot: str, shape: str) -> str | None:
        """The container kept for a step of ``shape`` booting from ``snapshot``, if any
        and still running (one removed or stopped by hand is not): it is the caller's
        from now on."""
        with self._lock:
            container = self._kept.pop((snapshot, shape), None)
        if container is None:
            return None
        try:
            running = bool(self._client().api.inspect_container(container)["State"]["Running"])
        except Exception:
            running = False
        if not running:
            self._remove([container])
            return None
        return container

    def close(self) -> None:
        """A run ended: with none left open, remove every kept container (and wait:
        the images they run may be removed next)."""
        with self._lock:
            self._runs = max(0, self._runs - 1)
            if self._runs:
                return
            gone, self._kept = list(self._kept.values()), {}
        self._remove(gone)

    def _remove(self, containers: list[str]) -> None:
        def remove(container: str) -> None:
            # Already gone is fine; the next run's sweep of leftovers is the backstop.
            with contextlib.suppress(Exception):
                self._client().api.remove_container(container, force=True)

        threads = [threading.Thread(target=remove, args=(c,)) for c in containers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
