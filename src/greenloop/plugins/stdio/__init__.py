"""Out-of-process plugins: executables that speak JSON-RPC 2.0 over their stdin/stdout.

The adapters in this package make such an executable look exactly like an in-process
plugin: :class:`StdioExecutor` is an :class:`~greenloop.plugins.spec.Executor`
(one process per step, so a crash fails only that step), :class:`StdioHook` a
:class:`~greenloop.plugins.spec.Hook` and :class:`StdioFormatter` a
:class:`~greenloop.plugins.spec.Formatter` (one long-lived process each).

Whatever the plugin does wrong — exits mid-call, hangs, writes garbage,
answers with an invalid result, speaks another protocol version — surfaces
as a :class:`~greenloop.protocol.PluginFailure` naming the plugin, and the
process (with its whole process group) is killed and reaped. The wire format
is described in ``docs/plugins.md``.

An executor plugin hands its step's artifacts to the host with ``artifact.put``
(see :class:`ArtifactUploads`): the host keeps them in its own store, so an
artifact from a plugin is the same store object as one from ``local``.
"""

from greenloop.plugins.stdio.executor_plugin import (
    DEFAULT_RUN_TIMEOUT,
    MAX_READ,
    RUN_GRACE,
    TIMEOUT_ENV,
    StdioExecutor,
    run_timeout,
)
from greenloop.plugins.stdio.formatter_plugin import StdioFormatter
from greenloop.plugins.stdio.hook_plugin import HOOK_BUDGET, HOOK_BUDGET_ENV, StdioHook, hook_budget
from greenloop.plugins.stdio.plugin_process import (
    CANCEL_GRACE,
    EVENT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    PROBE_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    TERM_GRACE,
    Hello,
    StdioKind,
    probe,
)
from greenloop.plugins.stdio.uploads import MAX_PUT, UPLOADS_DIR, ArtifactUploads

__all__ = [
    "CANCEL_GRACE",
    "DEFAULT_RUN_TIMEOUT",
    "EVENT_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "HOOK_BUDGET",
    "HOOK_BUDGET_ENV",
    "MAX_PUT",
    "MAX_READ",
    "PROBE_TIMEOUT",
    "RUN_GRACE",
    "SHUTDOWN_TIMEOUT",
    "TERM_GRACE",
    "TIMEOUT_ENV",
    "UPLOADS_DIR",
    "ArtifactUploads",
    "Hello",
    "StdioExecutor",
    "StdioFormatter",
    "StdioHook",
    "StdioKind",
    "hook_budget",
    "probe",
    "run_timeout",
]
