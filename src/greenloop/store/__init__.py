"""The content-addressed store (CAS): blobs, trees, their SQLite index, and gc.

Everything is named by SHA-256. Blobs are raw bytes; a tree is a canonical
JSON manifest blob, so a whole directory is one hash. The index records cache
entries, dev-loop artifacts and run history, and is the set of gc roots.
"""

from greenloop.store.exceptions import StoreError
from greenloop.store.gc import GcReport
from greenloop.store.index import Index
from greenloop.store.layout import clean, default_root
from greenloop.store.records import CacheEntry, RunRecord, StepRecord
from greenloop.store.store import Leftover, Store
from greenloop.store.trees import TreeEntry

__all__ = [
    "CacheEntry",
    "GcReport",
    "Index",
    "Leftover",
    "RunRecord",
    "StepRecord",
    "Store",
    "StoreError",
    "TreeEntry",
    "clean",
    "default_root",
]
