"""How every built-in executor waits for a step's command and turns its end into a
:class:`StepResult`."""

from __future__ import annotations

import time
from collections.abc import Callable

from greenloop.plugins.spec import Host
from greenloop.protocol import ArtifactRef, ExecutorInput, MissBuildAs, StepResult
from greenloop.protocol.executor import EXIT_INTERRUPTED, EXIT_TIMEOUT


def await_exit(
    poll: Callable[[], int | None], stop: Callable[[], None], request: ExecutorInput, host: Host
) -> int:
    """The command's exit code; ``EXIT_INTERRUPTED`` once the step is cancelled, or
    ``EXIT_TIMEOUT`` (logged) past its timeout, after ``stop`` has killed it.

    ``poll`` waits a short while for the command and returns its code, or None
    while it still runs, so cancellation and the deadline are looked at between polls.
    """
    timeout = request.step.timeout_seconds
    deadline = time.monotonic() + timeout if timeout else None
    while (code := poll()) is None:
        if host.cancelled(request.step_id):
            stop()
            return EXIT_INTERRUPTED
        if deadline is not None and time.monotonic() > deadline:
            stop()
            host.log(request.step_id, "stderr", f"greenloop: timed out after {timeout:g}s")
            return EXIT_TIMEOUT
    return code


class ArtifactEscapeError(ValueError):
    """A declared artifact leads outside the step's folder (through a symlink the step made)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"artifact path escapes the step's folder: {path}")


def conclude(
    request: ExecutorInput,
    host: Host,
    exit_code: int,
    collect: Callable[[], tuple[list[ArtifactRef], str]],
    commit: Callable[[str], None],
    keep: Callable[[str], None] | None = None,
) -> StepResult:
    """The step's result once its command exited with ``exit_code``.

    A failed command reports the declared artifacts it did write (all of them, or
    none), and its filesystem is kept by ``keep`` (everything, the workspace
    included) when the host asked for it with ``keep_failed_as``, so ``greenloop
    debug`` can open a shell in it. A passed one
    must produce every declared
    artifact (``collect`` returns the refs, or the first missing path, and raises
    :class:`ArtifactEscapeError` for one that leads outside the step) and, when the
    host asked for ``miss_build_as``, is committed to that tag by ``commit``.
    """
    if exit_code != 0:
        kept = None
        found: list[ArtifactRef] = []
        tag = request.keep_failed_as
        if exit_code != EXIT_INTERRUPTED:
            # Courtesies to whoever looks into the failure: what it declared (a test
            # run's JUnit file, say) and, when asked, its whole filesystem. Neither is
            # ever cached; the step failed either way.
            try:
                refs, missing = collect()
                found = [] if missing else refs
            except Exception:
                found = []
            if keep is not None and tag is not None:
                try:
                    keep(tag)
                    kept = tag
                except Exception as e:
                    host.log(request.step_id, "stderr", f"greenloop: could not keep it: {e}")
        return StepResult(exit_code=exit_code, committed_snapshot=kept, artifacts=found)
    try:
        artifacts, missing = collect()
    except ArtifactEscapeError as e:
        host.log(request.step_id, "stderr", f"greenloop: {e}")
        return StepResult(exit_code=1, committed_snapshot=None, artifacts=[])
    if missing:
        host.log(request.step_id, "stderr", f"greenloop: artifact not found: {missing}")
        return StepResult(exit_code=1, committed_snapshot=None, artifacts=[])
    committed = None
    if isinstance(request.cache_lookup, MissBuildAs):
        commit(request.cache_lookup.tag)
        committed = request.cache_lookup.tag
    return StepResult(exit_code=0, committed_snapshot=committed, artifacts=artifacts)
