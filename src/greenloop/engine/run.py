"""The orchestrator: pack the workspace, decide each step's cache outcome, run the DAG.

The host decides every cache outcome (``Hit``, ``MissBuildAs``, ``MissNoCommit``)
just before a step runs — once its parent's snapshot is known — and executors
only honour it. Independent steps run in parallel up to ``jobs``; a failed
step stops its dependents, and with ``fail_fast`` everything else.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Literal
from uuid import UUID

from greenloop._fs import process_start
from greenloop.engine import secret_values
from greenloop.engine.debug import kept_as
from greenloop.engine.decisions import Decided, Decisions, lost_entries
from greenloop.engine.emitter import Emitter
from greenloop.engine.keys import check_watched, digest, key_parts
from greenloop.engine.logs import StepLogs
from greenloop.engine.outcomes import (
    RemoteCache,
    RunOptions,
    RunResult,
    StepOutcome,
    blocked_by,
    run_status,
    with_sandboxes,
)
from greenloop.engine.placement import DEFAULT_EXECUTOR, Placement
from greenloop.engine.predict import plan, predict
from greenloop.engine.service_lifecycle import HostService, ServiceFailed, Services
from greenloop.engine.service_lifecycle import check as check_services
from greenloop.engine.workspace import ArchiveRegistry, Workspace, pack
from greenloop.plugins.spec import Executor, Hook
from greenloop.protocol import (
    ArtifactRef,
    BuildEvent,
    CommandStep,
    ExecutorInput,
    Hit,
    MissBuildAs,
    Pipeline,
    PlanSummary,
    PluginError,
    PluginFailure,
    RunFinished,
    RunStarted,
    StepCached,
    StepLog,
    StepResult,
    StepStarted,
)
from greenloop.protocol.events import StepStatus
from greenloop.protocol.ir import parents
from greenloop.store import RunRecord, Store, StoreError

__all__ = [
    "DEFAULT_EXECUTOR",
    "RemoteCache",
    "Run",
    "RunOptions",
    "RunResult",
    "StepOutcome",
    "with_sandboxes",
]


class Run:
    """One execution of one pipeline against the current workspace."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        root: Path,
        executors: Callable[[str], Executor],
        emit: Callable[[BuildEvent], None],
        options: RunOptions | None = None,
        hooks: list[Hook] | None = None,
        remote: RemoteCache | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.options = options or RunOptions()
        self.pipeline = pipeline = with_sandboxes(pipeline, self.options)
        self.root = root
        self.run_id = uuid.uuid4()
        self._placement = Placement(pipeline, executors, self.options.executor)
        self._executors = executors
        self._events = Emitter(emit, hooks or [], self._warning)
        self._remote = remote
        if remote is not None:
            remote.bind_run(self.run_id)
        self._cancel = threading.Event()
        # Why the run stopped by itself (--fail-fast, the pipeline's timeout): running
        # steps are stopped as on a cancel, but the run failed, it was not interrupted.
        self._stop_reason: str | None = None
        self._timed_out = False
        self._archives = ArchiveRegistry(store)
        self._predicted_hits: set[str] = set()
        self._logs = StepLogs(store)
        self._secrets = dict(secrets or {})
        self._masker = secret_values.Masker(self._secrets)
        self._step_ids = {s.key: uuid.uuid4() for s in pipeline.steps}
        self._keys_by_id = {v: k for k, v in self._step_ids.items()}
        self._decisions = Decisions(
            store,
            self.run_id,
            use_cache=self.options.use_cache,
            remote=remote,
            with_children={s.builds_in for s in pipeline.steps if s.builds_in},
        )
        self._lock = threading.Lock()
        self._by_key = {s.key: s for s in pipeline.steps}
        self._rebuilding = threading.RLock()
        self._services = Services(pipeline, self.run_id, self._secrets, self._cancel.is_set)

    # -- the Host interface executors call back into -------------------------------

    def read_archive(self, archive_id: UUID, offset: int, max_bytes: int) -> bytes:
        """Serve a chunk of the workspace archive."""
        return self._archives.read(archive_id, offset, max_bytes)

    def log(self, step_id: UUID, stream: Literal["stdout", "stderr"], line: str) -> None:
        """Forward a step's output line as a ``StepLog`` event."""
        key = self._keys_by_id.get(step_id)
        if key is not None:
            if self._masker:
                line = self._masker.mask(line)
            self._logs.add(key, stream, line)
            self._emit(StepLog(run_id=self.run_id, step=key, stream=stream, line=line))

    def cancelled(self, step_id: UUID) -> bool:
        """True once the run is being cancelled."""
        return self._cancel.is_set()

    # -- running -----------------------------------------------------------------

    def cancel(self) -> None:
        """Stop running steps and start no more (safe to call from a signal handler)."""
        self._cancel.set()

    def _stop(self, reason: str) -> None:
        """Stop running steps; the steps not started yet are answered only from the cache."""
        with self._lock:
            if self._stop_reason is None and not self._cancel.is_set():
                self._stop_reason = reason
        self._cancel.set()

    def _time_out(self) -> None:
        self._timed_out = True
        self._stop(f"the pipeline's timeout ({self.pipeline.timeout_seconds:g}s)")

    @property
    def _interrupted(self) -> bool:
        return self._cancel.is_set() and self._stop_reason is None

    @property
    def _cancel_reason(self) -> str:
        stopped = self._stop_reason
        return f"stopped by {stopped}" if stopped else "run cancelled"

    def preflight(self, steps: list[CommandStep]) -> None:
        """See :meth:`Placement.preflight`: every executor loads, ``steps``' check their setup."""
        self._placement.preflight(steps)

    def execute(self) -> RunResult:
        """Run the pipeline to the end (or until cancelled) and record it in the history.

        Packs the workspace and plans first; :meth:`preflight` then checks the setup
        of the steps that will run (a fully cached run never touches an engine), and
        its errors propagate before anything runs, as does a ``SetupError`` for an
        ``on_change`` glob that watches no file.
        """
        secret_values.missing(self.pipeline, self._secrets)
        check_services(self.pipeline, self._placement.name, self._placement.starts_services)
        workspace = pack(self.root, self.store, git=self.pipeline.wants_git)
        check_watched(self.pipeline, workspace.files)
        plan, to_run = self._plan(workspace)
        self._predicted_hits = {s.key for s in self.pipeline.steps} - {s.key for s in to_run}
        if to_run:
            # Packed now, as the plan says steps will run: its errors come before
            # anything runs. A fully cached run never packs it.
            workspace.archive()
            workspace.git_archive()
        self.preflight(to_run)
        started = time.time()
        outcomes: dict[str, StepOutcome] = {}
        timer = None
        try:
            veto = self._emit(
                RunStarted(run_id=self.run_id, pipeline=self.pipeline.name, at=started)
            )
            # The process is recorded so that, were it killed, the run reads as interrupted.
            me = os.getpid(), process_start(os.getpid())
            self.store.index.record_run(
                RunRecord(str(self.run_id), self.pipeline.name, "running", started, None, 0, 0, *me)
            )
            if self.pipeline.timeout_seconds is not None:
                timer = threading.Timer(self.pipeline.timeout_seconds, self._time_out)
                timer.daemon = True
                timer.start()
            if veto is None:
                self._emit(plan)
                self._schedule(workspace, outcomes)
        finally:
            self._services.stop_all()
            # Before the run's snapshots go: what an executor kept may run one of them.
            self._placement.close(self._warn)
            if timer is not None:
                timer.cancel()
            self._archives.close()
            self._logs.close()
            self._decisions.discard_run_scoped(self._executors, self._warn)
            if self._remote is not None:
                self._remote.close()
        status = run_status(outcomes, vetoed=veto is not None, interrupted=self._interrupted)
        duration = time.time() - started
        end, cached = started + duration, sum(o.status == "cached" for o in outcomes.values())
        self.store.index.record_run(
            RunRecord(
                str(self.run_id),
                self.pipeline.name,
                status,
                started,
                end,
                len(outcomes),
                cached,
                *me,
            )
        )
        error = veto or (f"timed out: {self._stop_reason} ran out" if self._timed_out else None)
        self._emit(RunFinished(run_id=self.run_id, status=status, duration_s=duration, error=error))
        return RunResult(self.run_id, status, outcomes, duration, self._timed_out)

    def _schedule(self, workspace: Workspace, outcomes: dict[str, StepOutcome]) -> None:
        pending = {s.key: s for s in self.pipeline.steps}
        running: dict[Future[StepOutcome], str] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            while pending or running:
                for key, step in list(pending.items()):
                    ups = parents(step)
                    if any(u in pending or u in running.values() for u in ups):
                        continue
                    del pending[key]
                    reason = blocked_by(step, outcomes)
                    if reason is not None:
                        outcomes[key] = self._finish(step, "skipped", error=reason)
                        continue
                    if self._interrupted:
                        outcomes[key] = self._finish(step, "cancelled", error="run cancelled")
                        continue
                    decided = None
                    if key in self._predicted_hits:
                        # Answered here: a cached chain costs no thread switch a step.
                        decided = self._decide(step, workspace, outcomes)
                        cached = self._cached(step, decided)
                        if cached is not None:
                            outcomes[key] = cached
                            continue
                    if len(running) >= max(1, self.options.jobs):
                        pending[key] = step  # no free slot yet; try again next round
                        break
                    job = pool.submit(self._step, step, workspace, outcomes, decided=decided)
                    running[job] = key
                if not running:
                    continue
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    key = running.pop(future)
                    outcomes[key] = future.result()
                    if outcomes[key].status == "failed" and self.options.fail_fast:
                        self._stop(f"--fail-fast: {key} failed")

    def _decide(
        self, step: CommandStep, workspace: Workspace, outcomes: dict[str, StepOutcome]
    ) -> Decided:
        """``step``'s key and cache decision, now that its parent's outcome is known."""
        name = self._placement.name(step)
        parent_snapshot = outcomes[step.builds_in].snapshot if step.builds_in else None
        files, git = workspace.files, workspace.git
        parts = key_parts(step, self.pipeline, self.keyed_as(step), parent_snapshot, files, git)
        key = digest(parts)
        host = self.host_tools(step) if step.cache is not None else None
        decision, entry = self._decisions.decide(step, key, name, host)
        return Decided(name, parent_snapshot, parts, key, decision, entry, host)

    def _cached(self, step: CommandStep, decided: Decided) -> StepOutcome | None:
        """The outcome of ``step`` when the cache answers it, else None."""
        entry = decided.entry
        if not isinstance(decided.decision, Hit) or entry is None:
            return None
        self.store.index.touch_entry(decided.key, time.time())
        self._emit(StepCached(run_id=self.run_id, step=step.key, label=step.label))
        return self._finish(
            step,
            "cached",
            exit_code=0,
            snapshot=entry.snapshot,
            artifacts=entry.artifacts,
            key=decided.key,
            log=entry.log,
        )

    def _step(
        self,
        step: CommandStep,
        workspace: Workspace,
        outcomes: dict[str, StepOutcome],
        *,
        retry: bool = True,
        decided: Decided | None = None,
    ) -> StepOutcome:
        if decided is None:
            decided = self._decide(step, workspace, outcomes)
        name, parent_snapshot, parts, key, decision, _, host = decided
        started = time.monotonic()
        stopped = self._stop_reason
        if stopped is not None and not isinstance(decision, Hit):
            # What the cache answers is still known; nothing new starts.
            return self._finish(step, "skipped", key=key, error=f"not started: {stopped}")
        cached = self._cached(step, decided)
        if cached is not None:
            return cached
        self._emit(StepStarted(run_id=self.run_id, step=step.key, label=step.label, executor=name))
        try:
            # An executor with its own ``start_service`` runs them; else the host does.
            start = getattr(self._executors(name), "start_service", HostService)
            services_env = self._services.env_for(step, start)
        except ServiceFailed as e:
            if self._cancel.is_set():
                return self._finish(
                    step, "cancelled", started=started, key=key, error=self._cancel_reason
                )
            return self._finish(step, "failed", started=started, key=key, error=str(e))
        request = ExecutorInput(
            step=step,
            workspace_archive_id=self._archives.of(workspace, git=step.git),
            env={**self.pipeline.env, **step.env, **services_env},
            workdir=step.workdir,
            run_id=self.run_id,
            step_id=self._step_ids[step.key],
            cache_lookup=decision,
            parent_snapshot=parent_snapshot,
            secrets=secret_values.for_step(step, self._secrets),
            secret_files=secret_values.files_for_step(step, self._secrets),
            keep_failed_as=kept_as(self.run_id, step.key),
        )
        try:
            result = self._executors(name).run(request, self)
            if not isinstance(result, StepResult):
                raise PluginFailure(
                    PluginError(plugin=name, kind="invalid_result", message=repr(result)[:200])
                )
        except PluginFailure as e:
            return self._finish(step, "failed", started=started, key=key, error=str(e.error))
        except StoreError as e:
            if retry and self._rebuild_damaged(step, parent_snapshot, e, workspace, outcomes):
                return self._step(step, workspace, outcomes, retry=False)
            return self._finish(step, "failed", started=started, key=key, error=str(e))
        except Exception as e:
            error = PluginError(plugin=name, kind="crashed", message=f"{type(e).__name__}: {e}")
            return self._finish(step, "failed", started=started, key=key, error=str(error))
        if result.exit_code != 0:
            code = result.exit_code
            if not self._cancel.is_set():
                # What a failed step declared and did write (its test report) goes
                # with its outcome, never into the cache.
                found = list(result.artifacts)
                return self._finish(
                    step, "failed", exit_code=code, started=started, key=key, artifacts=found
                )
            return self._finish(
                step,
                "cancelled",
                exit_code=code,
                started=started,
                key=key,
                error=self._cancel_reason,
            )
        snapshot = result.committed_snapshot
        if isinstance(decision, MissBuildAs):
            snapshot = snapshot or decision.tag
            if step.cache is not None:
                self._decisions.remember(
                    self.pipeline.name,
                    step,
                    key,
                    parts,
                    executor=name,
                    snapshot=snapshot,
                    artifacts=list(result.artifacts),
                    log=self._logs.seal(step.key),
                    host=host,
                )
        return self._finish(
            step,
            "passed",
            exit_code=0,
            started=started,
            snapshot=snapshot,
            artifacts=list(result.artifacts),
            key=key,
        )

    def _rebuild_damaged(
        self,
        step: CommandStep,
        booted_from: str | None,
        error: StoreError,
        workspace: Workspace,
        outcomes: dict[str, StepOutcome],
    ) -> bool:
        """Run again the cached ancestors of ``step`` whose entries the store dropped as
        it read them (a damaged or vanished object); True when ``step`` may be retried.

        The store drops every entry that needs a bad object, so the cached steps
        ``step`` boots from whose entries are gone are exactly those to rebuild,
        topmost first, each on its freshly built parent.
        """
        if step.builds_in is None:
            return False
        with self._rebuilding:
            if outcomes[step.builds_in].snapshot != booted_from:
                return True  # a sibling found the damage first and rebuilt the parent
            chain = lost_entries(step, outcomes, self._by_key, self.store)
            if not chain:
                return False
            labels = ", ".join(repr(s.label) for s in reversed(chain))
            self._warn(f"greenloop: {error}; running {labels} again")
            for ancestor in reversed(chain):
                outcome = self._step(ancestor, workspace, outcomes, retry=False)
                outcomes[ancestor.key] = outcome
                if outcome.status != "passed":
                    return False
            return True

    def keyed_as(self, step: CommandStep) -> str:
        """The executor as ``step``'s cache key names it (see :class:`Placement`)."""
        return self._placement.keyed_as(step)

    def host_tools(self, step: CommandStep) -> str | None:
        """The stamp of the host's tools ``step`` may run, if its executor gives one."""
        return self._placement.host_tools(step)

    def _plan(self, workspace: Workspace) -> tuple[PlanSummary, list[CommandStep]]:
        """Predict which steps the cache will answer; the plan and the steps to run."""

        predictions = predict(
            self.store,
            self.pipeline,
            workspace.files,
            self.keyed_as,
            self.host_tools,
            use_cache=self.options.use_cache,
            git=workspace.git,
        )
        return plan(self.pipeline, predictions, self.run_id, self.root, self._placement.note)

    def _finish(
        self,
        step: CommandStep,
        status: StepStatus,
        *,
        exit_code: int | None = None,
        started: float | None = None,
        snapshot: str | None = None,
        artifacts: list[ArtifactRef] | None = None,
        error: str | None = None,
        key: str | None = None,
        log: str | None = None,
    ) -> StepOutcome:
        duration = time.monotonic() - started if started is not None else 0.0
        if error is not None and self._masker:
            error = self._masker.mask(error)
        if status != "cached":
            log = self._logs.seal(step.key)
        self._services.finished(step.key)
        outcome = StepOutcome(
            step.key,
            step.label,
            status,
            exit_code,
            duration,
            snapshot,
            artifacts or [],
            error,
            key,
            log,
        )
        self.store.index.record_step(outcome.record(self.run_id, step.artifacts))
        self._emit(outcome.event(self.run_id))
        return outcome

    def _warn(self, message: str) -> None:
        self._emit(self._warning(message))

    def _warning(self, message: str) -> StepLog:
        return StepLog(run_id=self.run_id, step="greenloop", stream="stderr", line=message)

    def _emit(self, event: BuildEvent) -> str | None:
        """Send ``event`` to the formatter and every hook; return a hook's veto of a run."""
        return self._events.emit(event)
