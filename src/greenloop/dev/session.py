"""One ``greenloop dev`` session: the store, publisher, build thread and dev server, together.

The command line only parses flags and runs the watch loop; everything that
must be opened for a dev session, and closed in reverse when it ends (or when
opening a later part fails), lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from greenloop._project import PIPELINE_FILE
from greenloop.dev.app_supervisor import AppConfig, AppSupervisor, OnChange
from greenloop.dev.builder import output_step
from greenloop.dev.builds import DevBuilds
from greenloop.dev.publisher import Publisher
from greenloop.dev.tree_snapshot import TreeSnapshot
from greenloop.devloop.config import DevSettings, load_config
from greenloop.fleet.hosted_dev import DevReports
from greenloop.protocol import BuildResult, SetupError
from greenloop.sdk.loader import PipelineFileError, load
from greenloop.server import LiveState, Proxy, serve
from greenloop.server.hosts import HostPolicy
from greenloop.store import Store, StoreError

Report = Callable[[BuildResult, bool], None]
"""Told of each build: its result, and whether it was published."""


class DevSession:
    """A running dev server over the latest green build of ``root``, fed by a build thread.

    Opening checks everything a session needs (the host policy, the build
    pipeline and its output step, the store, the output folder, the port)
    and raises :class:`~greenloop.protocol.SetupError` saying what is wrong,
    with whatever it had opened closed again. :attr:`builds` is the listener
    to put on the watch loop; :meth:`start` serves the previous build and
    starts building, :meth:`close` stops it all.

    With ``app``, the server is a reverse proxy in front of the app process of
    the latest green build that became ready (:mod:`greenloop.dev.app_supervisor`), and
    without a build pipeline (``pipeline_name`` None) that build is a snapshot
    of the green tree.
    """

    url: str
    """Where the server listens."""
    builds: DevBuilds
    """The watch-loop listener that builds green trees and publishes them."""
    apps: AppSupervisor | None
    """The app supervisor, when the session runs an app."""

    def __init__(
        self,
        root: Path,
        *,
        pipeline_name: str | None,
        host: str,
        port: int,
        allowed_hosts: tuple[str, ...],
        out: Path | None,
        report: Report,
        app: AppConfig | None = None,
        on_app_change: OnChange | None = None,
        app_echo: Callable[[str], None] | None = None,
    ) -> None:
        """Open a session for ``root`` (see the class docstring); raises ``SetupError``.

        ``on_app_change`` and ``app_echo`` hear about the app.
        """
        try:
            HostPolicy.of(host, allowed_hosts)
        except ValueError as e:
            raise SetupError(str(e)) from None
        if app is not None:
            app.check(root)
        elif pipeline_name is None:
            raise SetupError("a site needs a build pipeline (--pipeline)")
        pipeline_file = root / PIPELINE_FILE
        if pipeline_name is not None:
            what = "the app" if app is not None else "the site"
            try:
                document = load(pipeline_file)
                output_step(document.pipeline(pipeline_name))
            except (PipelineFileError, ValueError) as e:
                raise SetupError(str(e)) from None
            except KeyError:
                defined = ", ".join(p.name for p in document.pipelines)
                raise SetupError(
                    f"{pipeline_file} defines no pipeline {pipeline_name!r} to build {what} "
                    f"with (defined: {defined})"
                ) from None
        with ExitStack() as opened:
            try:
                store = Store.open()
            except StoreError as e:
                raise SetupError(str(e)) from None
            opened.callback(store.close)
            publisher = Publisher(store, root, out)
            state = LiveState()
            proxy: Proxy | None = None
            self.apps = None
            if app is not None:
                self.apps = AppSupervisor(
                    app,
                    root,
                    state,
                    hold=publisher.hold,
                    release=publisher.release,
                    on_change=on_app_change,
                    echo=app_echo,
                )
                proxy = self.apps.proxy
            self.builds = DevBuilds(
                store,
                root,
                pipeline_file,
                pipeline_name,
                publisher,
                state,
                report,
                snapshot=TreeSnapshot(store, root) if pipeline_name is None else None,
                deploy=self.apps.deploy if self.apps is not None else None,
            )
            try:
                server = serve(state, host, port, allowed_hosts=allowed_hosts, proxy=proxy)
            except OSError as e:
                raise SetupError(f"cannot serve on {host}:{port}: {e}") from None
            opened.callback(server.stop)
            opened.callback(self.builds.stop)
            if self.apps is not None:
                # First: a deploy waiting for its app to be ready gives up, so the
                # build thread ends; then every app process is stopped.
                opened.callback(self.apps.close)
            self.url = server.url
            self._close = opened.pop_all()

    def start(self) -> None:
        """Serve the last published build, if any, and start building green trees."""
        self.builds.start()

    def close(self) -> None:
        """Stop the apps and building (a build in flight ends), stop serving, close the store."""
        self._close.close()


@dataclass(frozen=True)
class DevFlags:
    """What ``greenloop dev``'s flags ask for; sent as is to a ``greenloop serve`` hosting it."""

    host: str = "127.0.0.1"
    port: int = 0
    allowed_hosts: tuple[str, ...] = ()
    out: str | None = None
    """An absolute path, or None for the default."""
    pipeline_name: str | None = None
    app_command: str | None = None
    ready: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The flags as a ``dev`` request carries them."""
        return asdict(self)

    @classmethod
    def of_json(cls, flags: Mapping[str, Any]) -> DevFlags:
        """The flags a ``dev`` request carries; raises ``SetupError`` when malformed."""
        try:
            made = cls(**{**flags, "allowed_hosts": tuple(flags.get("allowed_hosts", ()))})
        except TypeError as e:
            raise SetupError(f"a malformed dev request: {e}") from None
        texts = (made.host, made.out, made.pipeline_name, made.app_command, made.ready)
        if (
            not all(t is None or isinstance(t, str) for t in texts)
            or not isinstance(made.port, int)
            or not all(isinstance(h, str) for h in made.allowed_hosts)
        ):
            raise SetupError(f"a malformed dev request: {dict(flags)!r}")
        return made

    def open(
        self,
        root: Path,
        settings: DevSettings,
        report: Report,
        on_app_change: OnChange | None = None,
        app_echo: Callable[[str], None] | None = None,
    ) -> DevSession:
        """The session these flags and ``settings`` (``[dev]``) ask for; raises ``SetupError``."""
        app = AppConfig.of(settings, self.app_command, self.ready)
        if app is None and self.ready is not None:
            raise SetupError(
                "--ready needs an app to wait for (--app CMD, or app in the [dev] settings)"
            )
        return DevSession(
            root,
            pipeline_name=self.pipeline_name or settings.build or (None if app else "build"),
            host=self.host,
            port=self.port,
            allowed_hosts=self.allowed_hosts,
            out=Path(self.out) if self.out is not None else None,
            report=report,
            app=app,
            on_app_change=on_app_change,
            app_echo=app_echo,
        )


def open_hosted(root: Path, flags: Mapping[str, Any], reports: DevReports) -> DevSession:
    """A session a ``greenloop serve`` hosts for ``root``, telling ``reports`` what happens.

    The :data:`~greenloop.fleet.hosted_dev.DevOpener` ``serve`` gives its endpoint.
    """
    return DevFlags.of_json(flags).open(
        root,
        load_config(root).settings.dev,
        reports.build,
        on_app_change=lambda status, line: reports.app(status.model_dump(mode="json"), line),
        app_echo=reports.log,
    )
