"""One ``greenloop dev`` session: the store, publisher, build thread and dev server, together.

The command line only parses flags and runs the watch loop; everything that
must be opened for a dev session, and closed in reverse when it ends (or when
opening a later part fails), lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from greenloop._project import PIPELINE_FILE
from greenloop.dev.builder import output_step
from greenloop.dev.builds import DevBuilds
from greenloop.dev.publisher import Publisher
from greenloop.protocol import BuildResult, SetupError
from greenloop.sdk.loader import PipelineFileError, load
from greenloop.server import LiveState, serve
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
    """

    url: str
    """Where the server listens."""
    builds: DevBuilds
    """The watch-loop listener that builds green trees and publishes them."""

    def __init__(
        self,
        root: Path,
        *,
        pipeline_name: str,
        host: str,
        port: int,
        allowed_hosts: tuple[str, ...],
        out: Path | None,
        report: Report,
    ) -> None:
        """Open a session for ``root`` (see the class docstring); raises ``SetupError``."""
        try:
            HostPolicy.of(host, allowed_hosts)
        except ValueError as e:
            raise SetupError(str(e)) from None
        pipeline_file = root / PIPELINE_FILE
        try:
            output_step(load(pipeline_file).pipeline(pipeline_name))
        except (PipelineFileError, ValueError) as e:
            raise SetupError(str(e)) from None
        except KeyError:
            raise SetupError(
                f"{pipeline_file} defines no pipeline {pipeline_name!r} to build the site with"
            ) from None
        with ExitStack() as opened:
            try:
                store = Store.open()
            except StoreError as e:
                raise SetupError(str(e)) from None
            opened.callback(store.close)
            publisher = Publisher(store, root, out)
            state = LiveState()
            self.builds = DevBuilds(
                store, root, pipeline_file, pipeline_name, publisher, state, report
            )
            try:
                server = serve(state, host, port, allowed_hosts=allowed_hosts)
            except OSError as e:
                raise SetupError(f"cannot serve on {host}:{port}: {e}") from None
            opened.callback(server.stop)
            opened.callback(self.builds.stop)
            self.url = server.url
            self._close = opened.pop_all()

    def start(self) -> None:
        """Serve the last published build, if any, and start building green trees."""
        self.builds.start()

    def close(self) -> None:
        """Stop building (a build in flight finishes), stop serving, close the store."""
        self._close.close()
