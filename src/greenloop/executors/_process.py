"""Process helpers the executors share."""

from __future__ import annotations

import os


def pid_alive(pid: int | str) -> bool:
    """Whether process ``pid`` exists on this machine (a malformed pid is not alive)."""
    if isinstance(pid, str):
        if not pid.isdigit():
            return False
        pid = int(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
