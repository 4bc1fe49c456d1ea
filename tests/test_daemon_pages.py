"""What a forked command wrote is named exactly, and copying it ahead into another forked
child changes nothing of that child's memory but whose it is."""

from __future__ import annotations

import marshal
import mmap
import os
import resource
from array import array
from collections.abc import Callable

from greenloop.daemon import pages

_PAGE = mmap.PAGESIZE
_PAGES = 128


def _in_child(body: Callable[[], bytes]) -> bytes:
    """What ``body`` returns, run in a forked child of this process."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.write(write_end, body())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    os.waitpid(pid, 0)
    return data


def _runs(data: bytes) -> list[tuple[int, int]]:
    pairs = array("Q")
    pairs.frombytes(data)
    return [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]


def _covered(data: bytes, start: int, end: int) -> set[int]:
    """The pages of ``[start, end)`` the runs ``data`` name, by their index from ``start``."""
    found = set()
    for run_start, length in _runs(data):
        for at in range(max(run_start, start), min(run_start + length, end), _PAGE):
            found.add((at - start) // _PAGE)
    return found


def _block() -> tuple[mmap.mmap, int]:
    """Private anonymous pages, every one present in this process; and their address."""
    block = mmap.mmap(-1, _PAGES * _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(_PAGES):
        block[page * _PAGE] = 1
    view = memoryview(block)
    address = _address(view)
    view.release()
    return block, address


def _address(view: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_a_forked_child_names_the_pages_it_wrote_and_no_others() -> None:
    block, start = _block()
    wrote = {3, 4, 5, 40}

    def write_some() -> bytes:
        for page in wrote:
            block[page * _PAGE + 7] = 2
        return pages.written()

    data = _in_child(write_some)
    assert _covered(data, start, start + _PAGES * _PAGE) == wrote
    block.close()


def test_pages_copied_ahead_keep_their_content_and_take_no_fault_when_written() -> None:
    block, start = _block()
    block[9 * _PAGE : 9 * _PAGE + 5] = b"hello"
    told = array("Q", [start + 8 * _PAGE, 32 * _PAGE]).tobytes()  # pages 8 to 39

    def faults_writing(first: int) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for page in range(first, first + 32):
            block[page * _PAGE + 100] = 3
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def copy_then_write() -> bytes:
        pages.populate(told)
        own = _covered(pages.written(), start, start + _PAGES * _PAGE)
        content = bytes(block[9 * _PAGE : 9 * _PAGE + 5])
        faults_writing(0)  # the measuring's own first faults, out of the way
        copied, shared = faults_writing(8), faults_writing(40)
        return marshal.dumps((sorted(own), content, copied, shared))

    own, content, copied, shared = marshal.loads(_in_child(copy_then_write))
    assert own == list(range(8, 40))
    assert content == b"hello"
    assert shared - copied >= 32  # each page not copied ahead took a fault; none copied did
    assert bytes(block[9 * _PAGE : 9 * _PAGE + 5]) == b"hello"  # the parent's stay its own
    assert block[8 * _PAGE + 100] == 0
    block.close()


def test_what_is_not_mapped_here_is_left_alone() -> None:
    block, start = _block()
    block.close()  # gone: its addresses are no longer mapped
    told = array("Q", [start, _PAGES * _PAGE, 0, _PAGE, 1 << 60, _PAGE]).tobytes()
    # Nothing to copy: nothing happens, and nothing is raised.
    pages.populate(told)
    pages.populate(b"not pairs")
    pages.populate(b"")


def test_tell_sends_what_was_written_and_hangs_up() -> None:
    block, start = _block()
    read_end, write_end = os.pipe()

    def write_then_tell() -> bytes:
        block[5 * _PAGE] = 9
        os.close(read_end)
        pages.tell(write_end)
        try:
            os.fstat(write_end)
        except OSError:
            return b"closed"
        return b"open"

    assert _in_child(write_then_tell) == b"closed"
    os.close(write_end)
    with os.fdopen(read_end, "rb") as told:
        data = told.read()
    assert 5 in _covered(data, start, start + _PAGES * _PAGE)
    block.close()


def test_copying_ahead_stops_when_asked() -> None:
    block, start = _block()
    told = array("Q", [start, _PAGES * _PAGE]).tobytes()

    def copy_until_stopped() -> bytes:
        pages.populate(told, stop=lambda: True)  # the command has come: leave it all
        return marshal.dumps(sorted(_covered(pages.written(), start, start + _PAGES * _PAGE)))

    assert marshal.loads(_in_child(copy_until_stopped)) == []
    block.close()
