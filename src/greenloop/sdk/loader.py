"""Load a pipeline file and compile every pipeline it defines into an IR document."""

from __future__ import annotations

import functools
import json
import marshal
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from greenloop._procs import close_all_but
from greenloop._project import PIPELINE_FILE, PROJECT_DIR
from greenloop.protocol.ir import (
    CommandStep,
    Compose,
    Forever,
    IRDocument,
    OnChange,
    Pipeline,
    Sandbox,
    SecretUse,
    Ttl,
)
from greenloop.sdk.compiler import compile_pipeline
from greenloop.sdk.registry import loading
from greenloop.sdk.steps import PipelineDefinitionError


class PipelineFileError(Exception):
    """The pipeline file could not be loaded; ``where`` is ``file:line`` of the cause."""

    def __init__(self, message: str, where: str | None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where


def find_pipeline_file(start: Path) -> Path | None:
    """The nearest ``.greenloop/pipeline.py`` at or above ``start``."""
    for directory in [start, *start.parents]:
        candidate = directory / PIPELINE_FILE
        if candidate.is_file():
            return candidate
    return None


def project_root(pipeline_file: Path) -> Path:
    """The project a pipeline file belongs to (the parent of its ``.greenloop`` folder)."""
    pipeline_file = pipeline_file.resolve()
    if pipeline_file.parent.name == PROJECT_DIR.name:
        return pipeline_file.parent.parent
    return pipeline_file.parent


def load(path: Path) -> IRDocument:
    """Execute the pipeline file at ``path`` and compile its pipelines.

    Any failure — a syntax error, a failing import, an exception in a pipeline
    function, ``sys.exit()``, ``os._exit()``, an invalid or cyclic graph —
    becomes a :class:`PipelineFileError` that names the ``file:line`` of its
    cause. On POSIX the file runs in a forked child, so nothing it does (exit,
    ``chdir``, patching modules, printing) reaches the calling process; what it
    prints goes to stderr, never into a command's stdout.
    """
    path = path.resolve()
    try:
        source = path.read_text()
    except OSError as e:
        raise PipelineFileError(f"cannot read pipeline file: {e.strerror}", str(path)) from None
    if not hasattr(os, "fork"):
        return IRDocument.model_validate_json(_compile_file(source, path))
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        pid, request, answer = spare
        if _send(request, source, path):
            document = _answer(pid, answer, path)
            if document is not None:
                return document
        else:
            os.close(answer)
            _reap_later(pid)
        # It is gone, or could not load: the usual way.
    document = _load_in_child(source, path)
    assert document is not None  # only a spare asks to be retried
    return document


_spare: tuple[int, int, int] | None = None


def hand_over(spare: tuple[int, int, int]) -> None:
    """Load the next pipeline file in ``spare`` (pid, request and answer ends), a child
    forked ahead by :mod:`greenloop.daemon.spare`, rather than fork one then."""
    global _spare
    _spare = spare


def _send(request: int, source: str, path: Path) -> bool:
    """Send the spare loader its file and what this process is now; False when it is gone."""
    message = marshal.dumps(
        {
            "source": source,
            "file": str(path),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "argv": list(sys.argv),
            "path": list(sys.path),
            "umask": _umask(),
        }
    )
    try:
        with os.fdopen(request, "wb") as out:
            out.write(message)
    except BrokenPipeError:
        return False
    return True


def serve_spare(
    request: int, answer: int, keep: tuple[int, ...] = (), after: Callable[[], None] | None = None
) -> None:
    """The spare loader's side: wait for a request, become the process that sent it, and
    compile its file (returns only when none came: the command did not load). ``keep``:
    descriptors left open with the answer's; ``after``: called once it is sent."""
    with os.fdopen(request, "rb") as incoming:
        data = incoming.read()
    if not data:
        return
    sent = marshal.loads(data)
    os.chdir(sent["cwd"])
    os.umask(sent["umask"])
    os.environ.clear()
    os.environ.update(sent["env"])
    sys.argv = sent["argv"]
    sys.path[:] = sent["path"]
    _child(sent["source"], Path(sent["file"]), answer, keep, after)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _load_in_child(source: str, path: Path) -> IRDocument | None:
    """Compile the file in a forked child and read its answer from a pipe."""
    _warm()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its outcome is asserted by the parent's tests
        os.close(read_end)
        _child(source, path, write_end)
    os.close(write_end)
    return _answer(pid, read_end, path)


def _answer(pid: int, read_end: int, path: Path) -> IRDocument | None:
    """The IR document the loader child ``pid`` answers on ``read_end`` (or its error);
    None when a spare loader asks to be retried."""
    with os.fdopen(read_end, "rb") as answers:
        answer = answers.read()
    if answer:
        # The child flushed everything before it answered: only its exit is left,
        # and a large process takes milliseconds to tear down. Not waited for here.
        _reap_later(pid)
    else:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        how = f"exit status {code}" if code >= 0 else f"signal {-code}"
        raise PipelineFileError(
            f"the pipeline file ended the process that loads it ({how}) before it was compiled; "
            "a pipeline file must not call os._exit() or kill its process",
            str(path),
        )
    kind, _, payload = answer.partition(b"\n")
    if kind == b"retry":
        return None
    if kind == b"ok":
        return IRDocument.model_validate_json(payload)
    error = json.loads(payload)
    raise PipelineFileError(error["message"], error["where"])


def _reap_later(pid: int) -> None:
    """Reap the loader child ``pid`` once it has gone, without waiting for it here."""
    if os.waitpid(pid, os.WNOHANG)[0] == 0:
        threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()


def _child(
    source: str,
    path: Path,
    write_end: int,
    keep: tuple[int, ...] = (),
    after: Callable[[], None] | None = None,
) -> NoReturn:
    """Compile, write the answer (``ok`` or ``error``, a newline, JSON) to the pipe, and leave
    (see :func:`serve_spare` for ``keep`` and ``after``)."""
    # The file's prints (and its subprocesses') belong on stderr: stdout may be a
    # command's JSON.
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        try:
            message = b"ok\n" + _compile_file(source, path)
        except PipelineFileError as e:
            message = b"error\n" + json.dumps({"message": e.message, "where": e.where}).encode()
        # Flushed, and every other descriptor closed, before the answer: the parent
        # does not wait for this process to end, so by then nothing of it may be left
        # but memory (what the file printed comes before what the parent prints next).
        sys.stderr.flush()
        close_all_but(write_end, *keep)
        with os.fdopen(write_end, "wb") as out:
            out.write(message)
        if after is not None:
            after()
    finally:
        # Never run the parent's atexit handlers, finalizers or buffered output.
        os._exit(0)


@functools.cache
def _warm() -> None:
    """Build the IR models' validators here, once, before any fork.

    They are deferred until first use; a child that built them would throw them
    away with itself, paying ~10 ms on every load of a long-lived process (the
    dev loop's builder, a daemon's forked commands)."""
    policies = [Forever(), Ttl(seconds=1), OnChange(globs=["x"])]
    step = CommandStep(
        key="w",
        label="w",
        command="true",
        cache=Compose(policies=policies),
        secrets=[SecretUse(name="W", env="W")],
        sandbox=Sandbox(mode="none"),
    )
    IRDocument(pipelines=[Pipeline(name="w", steps=[step])])


def _compile_file(source: str, path: Path) -> bytes:
    """Run the pipeline file in this process and return its IR document as JSON."""
    # Targets may live beside the pipeline file (``from targets import tests``).
    sys.path.insert(0, str(path.parent))
    try:
        with loading() as found:
            module = types.ModuleType("greenloop_pipeline")
            module.__file__ = str(path)
            found.namespace = module.__dict__
            try:
                code = compile(source, str(path), "exec")
                exec(code, module.__dict__)
                pipelines = [compile_pipeline(d) for d in found.pipelines]
            except PipelineDefinitionError as e:
                raise PipelineFileError(str(e), e.where) from None
            except SyntaxError as e:
                raise PipelineFileError(
                    f"syntax error: {e.msg}", f"{e.filename}:{e.lineno}"
                ) from None
            except SystemExit as e:
                raise PipelineFileError(
                    f"the pipeline file called sys.exit({e.code!r}); "
                    "a pipeline file defines pipelines and must not exit",
                    _blame(e, str(path)),
                ) from None
            except BaseException as e:
                raise PipelineFileError(f"{type(e).__name__}: {e}", _blame(e, str(path))) from None
            if not pipelines:
                raise PipelineFileError("no pipelines defined (use @greenloop.pipeline)", str(path))
            return IRDocument(pipelines=pipelines).model_dump_json().encode()
    finally:
        sys.path.remove(str(path.parent))


def _blame(error: BaseException, filename: str) -> str | None:
    """The innermost traceback frame in the pipeline file, else the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if f.filename == filename]
    chosen = mine or list(frames)
    return f"{chosen[-1].filename}:{chosen[-1].lineno}" if chosen else None
