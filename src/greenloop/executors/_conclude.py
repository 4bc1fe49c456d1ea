"""How every built-in executor turns a finished command into a :class:`StepResult`."""

from __future__ import annotations

from collections.abc import Callable

from greenloop.plugins.spec import Host
from greenloop.protocol import ArtifactRef, ExecutorInput, MissBuildAs, StepResult


def conclude(
    request: ExecutorInput,
    host: Host,
    exit_code: int,
    collect: Callable[[], tuple[list[ArtifactRef], str]],
    commit: Callable[[str], None],
) -> StepResult:
    """The step's result once its command exited with ``exit_code``.

    A failed command reports nothing else. A passed one must produce every declared
    artifact (``collect`` returns the refs, or the first missing path) and, when the
    host asked for ``miss_build_as``, is committed to that tag by ``commit``.
    """
    if exit_code != 0:
        return StepResult(exit_code=exit_code, committed_snapshot=None, artifacts=[])
    artifacts, missing = collect()
    if missing:
        host.log(request.step_id, "stderr", f"greenloop: artifact not found: {missing}")
        return StepResult(exit_code=1, committed_snapshot=None, artifacts=[])
    committed = None
    if isinstance(request.cache_lookup, MissBuildAs):
        commit(request.cache_lookup.tag)
        committed = request.cache_lookup.tag
    return StepResult(exit_code=0, committed_snapshot=committed, artifacts=artifacts)
