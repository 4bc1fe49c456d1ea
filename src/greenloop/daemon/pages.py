"""The memory a command forked from the daemon wrote, copied ahead for the next one.

A forked child shares the daemon's pages until it writes one: the kernel then
copies that page, on a fault of its own (a few microseconds in a virtual
machine). A command writes a couple of thousand of them, nearly the same ones
every time (each child starts from the same frozen daemon), so a command pays
milliseconds of faults. A finished command says which pages it had of its own
(:func:`written`, off its answer's path); the child forked ahead for the next
command has those copied in one call per run of pages (:func:`populate`,
``MADV_POPULATE_WRITE``: the kernel copies as a write would, and nothing is
written) while it waits. Copied ahead, a page reads as the process's own
whether it then writes it or not: what is learnt comes from a command whose
pages were not copied ahead (the daemon has one such every so often). Only where
the memory is laid out as it was: a page no longer private and writable is left
as it is. Linux 5.14 or later; elsewhere, or when the kernel will not, nothing is
copied ahead and nothing else changes.
"""

from __future__ import annotations

import bisect
import os
import re
from array import array
from collections.abc import Callable, Sequence

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_POPULATE_WRITE = 23  # MADV_POPULATE_WRITE, linux/mman.h
# The top byte of a /proc/PID/pagemap entry: bit 63 present, bit 56 mapped by this
# process alone. Both set: a page this process has of its own.
_OWN = bytes(1 if top & 0x81 == 0x81 else 0 for top in range(256))
_RUN = re.compile(b"\x01+")
_MAX_RUNS = 1 << 16
"""More runs than this and the layout is not a command's: none are kept."""
_EVERY = 2 * 32
"""How many runs (pairs) :func:`populate` copies between two questions to its ``stop``."""


def _private_writable() -> list[tuple[int, int]]:
    """This process's private writable mappings, as sorted (start, end) addresses."""
    spans = []
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split(maxsplit=2)
            if fields[1] == b"rw-p":
                start, _, end = fields[0].partition(b"-")
                spans.append((int(start, 16), int(end, 16)))
    return spans


def written() -> bytes:
    """The runs of pages of this process's private writable memory that it has of its
    own (in a process forked from the daemon: the ones it wrote), as the array of
    ``start, length`` pairs :func:`populate` takes; empty when that cannot be known."""
    runs = array("Q")
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            for start, end in _private_writable():
                entries = os.pread(pagemap.fileno(), (end - start) // _PAGE * 8, start // _PAGE * 8)
                for run in _RUN.finditer(entries[7::8].translate(_OWN)):
                    runs.extend((start + run.start() * _PAGE, (run.end() - run.start()) * _PAGE))
    except (OSError, ValueError):
        return b""
    return runs.tobytes() if len(runs) <= 2 * _MAX_RUNS else b""


def tell(fd: int) -> None:
    """Write :func:`written` to ``fd``, then close it: its reader then need not wait for
    this process's memory to be torn down (the kernel frees that before it closes files)."""
    try:
        data = memoryview(written())
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def populate(data: bytes, stop: Callable[[], bool] | None = None) -> None:
    """Have the kernel copy the pages :func:`written` named into this process now, as a
    write to each would (their content stays as it is), where they are still private
    and writable here; ``stop`` is asked now and then whether to leave the rest."""
    if not data or len(data) % 16:
        return
    madvise = _madvise()
    if madvise is None:
        return
    pairs = array("Q")
    pairs.frombytes(data)
    spans = _private_writable()
    starts = [start for start, _ in spans]
    for i in range(0, len(pairs), 2):
        if stop is not None and i % _EVERY == 0 and stop():
            return  # what is left faults in as it is written, as without
        for start, length in _within(spans, starts, pairs[i], pairs[i] + pairs[i + 1]):
            if madvise(start, length, _POPULATE_WRITE) != 0:
                return  # an older kernel, or one that will not: nothing more to try


def _within(
    spans: Sequence[tuple[int, int]], starts: Sequence[int], start: int, end: int
) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` inside ``spans`` (sorted, disjoint), as (start, length)."""
    parts = []
    at = max(bisect.bisect_right(starts, start) - 1, 0)
    while at < len(spans) and spans[at][0] < end:
        low, high = max(start, spans[at][0]), min(end, spans[at][1])
        if low < high:
            parts.append((low, high - low))
        at += 1
    return parts


_found: list[Callable[[int, int, int], int] | None] = []


def prepare() -> None:
    """Find ``madvise`` now (the daemon, once), not in each child."""
    _madvise()


def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise`` (None where there is none to call)."""
    if not _found:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.madvise
            call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            call.restype = ctypes.c_int
            _found.append(call)
        except (OSError, AttributeError):
            _found.append(None)
    return _found[0]
