"""Load a pipeline file and compile every pipeline it defines into an IR document."""

from __future__ import annotations

import traceback
import types
from pathlib import Path

from greenloop.protocol.ir import IRDocument
from greenloop.sdk import compiler as _compiler
from greenloop.sdk.steps import PipelineDefinitionError

PIPELINE_FILE = Path(".greenloop") / "pipeline.py"


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
    if pipeline_file.parent.name == ".greenloop":
        return pipeline_file.parent.parent
    return pipeline_file.parent


def load(path: Path) -> IRDocument:
    """Execute the pipeline file at ``path`` and compile its pipelines.

    Any failure — a syntax error, a failing import, an exception in a pipeline
    function, an invalid or cyclic graph — becomes a :class:`PipelineFileError`
    that names the ``file:line`` of its cause.
    """
    path = path.resolve()
    try:
        source = path.read_text()
    except OSError as e:
        raise PipelineFileError(f"cannot read pipeline file: {e.strerror}", str(path)) from None
    saved = list(_compiler._registry)
    _compiler._registry.clear()
    try:
        module = types.ModuleType("greenloop_pipeline")
        module.__file__ = str(path)
        try:
            code = compile(source, str(path), "exec")
            exec(code, module.__dict__)
            pipelines = [_compiler.compile_pipeline(d) for d in _compiler._registry]
        except PipelineDefinitionError as e:
            raise PipelineFileError(str(e), e.where) from None
        except SyntaxError as e:
            raise PipelineFileError(f"syntax error: {e.msg}", f"{e.filename}:{e.lineno}") from None
        except Exception as e:
            raise PipelineFileError(f"{type(e).__name__}: {e}", _blame(e, str(path))) from None
        if not pipelines:
            raise PipelineFileError("no pipelines defined (use @greenloop.pipeline)", str(path))
        return IRDocument(pipelines=pipelines)
    finally:
        _compiler._registry[:] = saved


def _blame(error: BaseException, filename: str) -> str | None:
    """The innermost traceback frame in the pipeline file, else the innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if f.filename == filename]
    chosen = mine or list(frames)
    return f"{chosen[-1].filename}:{chosen[-1].lineno}" if chosen else None
