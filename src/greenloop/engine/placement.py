"""Which executor runs each step of a run, how a step's key names it, and its setup check."""

from __future__ import annotations

import json
from collections.abc import Callable

from greenloop.plugins.spec import Executor, variant_of
from greenloop.protocol import CommandStep, Pipeline

DEFAULT_EXECUTOR = "local"


class Placement:
    """The executors of one run's steps: ``--executor``, else the step's, the pipeline's
    or :data:`DEFAULT_EXECUTOR`."""

    def __init__(
        self, pipeline: Pipeline, executors: Callable[[str], Executor], forced: str | None
    ) -> None:
        """Place ``pipeline``'s steps; ``executors(name)`` loads one, ``forced`` wins over all."""
        self._pipeline = pipeline
        self._executors = executors
        self._forced = forced
        self._image_ids: dict[tuple[str, str], str] = {}
        self._host_tools: dict[tuple[str, str], str | None] = {}
        self._checked: list[str] = []

    def name(self, step: CommandStep) -> str:
        """The name of the executor that runs ``step``."""
        return self._forced or step.executor or self._pipeline.executor or DEFAULT_EXECUTOR

    def executor(self, step: CommandStep) -> Executor:
        """The executor that runs ``step``."""
        return self._executors(self.name(step))

    def keyed_as(self, step: CommandStep) -> str:
        """The executor as ``step``'s cache key names it: its name, its variant if any, and
        the ids of the images it boots when the executor can say them: a root step's,
        and those of the services it starts itself (a tag built or pulled again reruns
        the step)."""
        executor = self.executor(step)
        variant = variant_of(executor, step)
        name = self.name(step) if variant is None else f"{self.name(step)}+{variant.key}"
        identify = getattr(executor, "image_id", None)
        if identify is None:
            return name
        keyed = name
        image = None if step.builds_in else (step.image or self._pipeline.default_image)
        if image is not None:
            keyed += f"@{self._image_id(name, image, identify)}"
        if step.services and self.starts_services(step):
            images = {s: self._pipeline.service(s).image for s in sorted(step.services)}
            ids = [f"{s}@{self._image_id(name, i, identify)}" for s, i in images.items()]
            keyed += "+services:" + ",".join(ids)
        return keyed

    def _image_id(self, name: str, image: str | None, identify: Callable[[str], str | None]) -> str:
        if image is None:
            return "absent"  # the executor's preflight refuses the step
        if (name, image) not in self._image_ids:
            # Asked once a run. An absent image keys as such: never a hit from an entry
            # made with whatever image once had that name.
            self._image_ids[name, image] = identify(image) or "absent"
        return self._image_ids[name, image]

    def host_tools(self, step: CommandStep) -> str | None:
        """The stamp of the host's tools ``step`` may run that its key does not cover, when
        its executor says (``host_tools``; the local executor's ``PATH`` folders): a local
        entry answers the step only while it is the same. Read once a run."""
        executor = self.executor(step)
        read = getattr(executor, "host_tools", None)
        if read is None:
            return None
        env = {**self._pipeline.env, **step.env}
        binds = step.sandbox.ro_binds if step.sandbox is not None else []
        asked = (self.keyed_as(step), json.dumps([sorted(env.items()), binds]))
        if asked not in self._host_tools:
            self._host_tools[asked] = read(step, env)
        return self._host_tools[asked]

    def note(self, step: CommandStep) -> str | None:
        """How the executor will run ``step``, for the plan line (``local: bwrap sandbox, ...``)."""
        variant = variant_of(self.executor(step), step)
        return f"{self.name(step)}: {variant.note}" if variant is not None else None

    def starts_services(self, step: CommandStep) -> bool:
        """Whether ``step``'s executor starts services itself (else they run on the host)."""
        return hasattr(self.executor(step), "start_service")

    def preflight(self, steps: list[CommandStep]) -> None:
        """Load every executor the pipeline names; let those of ``steps`` check their setup.

        Raises ``PluginFailure`` for an unknown executor and ``SetupError`` for a
        missing engine, image or program — before anything runs. Once it has returned,
        :meth:`close` must follow when the run ends.
        """
        for step in self._pipeline.steps:
            self.executor(step)
        by_executor: dict[str, list[CommandStep]] = {}
        for step in steps:
            by_executor.setdefault(self.name(step), []).append(step)
        try:
            for name, group in by_executor.items():
                check = getattr(self._executors(name), "preflight", None)
                if check is not None:
                    check(self._pipeline, group)
                    self._checked.append(name)
        except BaseException:
            self.close()  # the run ends here: what the earlier checks opened, too
            raise

    def close(self, warn: Callable[[str], None] | None = None) -> None:
        """The run has ended: each executor :meth:`preflight` checked gets to let go of
        what it kept for the run (``close``, when it has one: containers kept for a
        chain's next step, say). Idempotent; ``warn`` says which could not (cleanup
        never turns a result into a crash), else the first failure is raised once all
        have been closed."""
        checked, self._checked = self._checked, []
        failure: Exception | None = None
        for name in checked:
            close = getattr(self._executors(name), "close", None)
            try:
                if close is not None:
                    close()
            except Exception as e:
                if warn is None:
                    failure = failure or e
                else:
                    warn(f"could not close executor {name!r}: {e}")
        if failure is not None:
            raise failure
