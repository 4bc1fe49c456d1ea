"""Tree manifests: hashing, materialising, and path safety."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenloop.store import Store, StoreError, TreeEntry
from greenloop.store.materialize import materialize_entries


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as s:
        yield s


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _symlink(target: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _sample(root: Path, *, reverse: bool = False, loose: bool = False) -> Path:
    """A tree with files, an executable, a symlink out of the tree, and an empty dir."""
    plain, execu = (0o600, 0o700) if loose else (0o644, 0o755)
    steps: list[Callable[[], object]] = [
        lambda: _write(root / "src" / "main.py", b"print('hi')\n", plain),
        lambda: _write(root / "bin" / "run.sh", b"#!/bin/sh\necho run\n", execu),
        lambda: (root / "empty" / "nested").mkdir(parents=True),
        lambda: os.symlink("../outside/target", root / "link"),
        lambda: _symlink("src/main.py", root / "bin" / "main-link"),
        lambda: _write(root / "README", b"readme\n", plain),
    ]
    root.mkdir(parents=True, exist_ok=True)
    for step in reversed(steps) if reverse else steps:
        step()
    return root


def test_tree_hash_is_independent_of_creation_order_mtime_and_umask(
    store: Store, tmp_path: Path
) -> None:
    a = _sample(tmp_path / "a")
    b = _sample(tmp_path / "b", reverse=True, loose=True)
    os.utime(b / "README", (1_000_000, 1_000_000))
    assert store.put_tree(a) == store.put_tree(b)


def test_get_tree_lists_normalised_entries(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t", loose=True))
    entries = {e.path: e for e in store.get_tree(tree)}
    assert entries["src/main.py"].mode == 0o644
    assert entries["bin/run.sh"].mode == 0o755
    assert entries["empty/nested"] == TreeEntry("empty/nested", "dir", 0o755)
    assert entries["link"] == TreeEntry("link", "symlink", 0o777, target="../outside/target")
    assert list(entries) == sorted(entries)
    blob = entries["README"].blob
    assert blob is not None and store.read_bytes(blob) == b"readme\n"


@pytest.mark.parametrize(
    "change",
    [
        "content",
        "rename",
        "exec_bit",
        "symlink_target",
        "new_empty_dir",
        "file_to_symlink",
        "remove",
    ],
)
def test_tree_hash_changes_with_any_change(store: Store, tmp_path: Path, change: str) -> None:
    root = _sample(tmp_path / "t")
    before = store.put_tree(root)
    if change == "content":
        (root / "README").write_bytes(b"readme!\n")
    elif change == "rename":
        (root / "README").rename(root / "README.md")
    elif change == "exec_bit":
        (root / "README").chmod(0o744)
    elif change == "symlink_target":
        (root / "link").unlink()
        os.symlink("../outside/other", root / "link")
    elif change == "new_empty_dir":
        (root / "src" / "pkg").mkdir()
    elif change == "file_to_symlink":
        (root / "README").unlink()
        os.symlink("readme\n", root / "README")
    elif change == "remove":
        (root / "empty" / "nested").rmdir()
    assert store.put_tree(root) != before


def test_group_and_other_bits_do_not_change_the_hash(store: Store, tmp_path: Path) -> None:
    root = _sample(tmp_path / "t")
    before = store.put_tree(root)
    (root / "README").chmod(0o664)
    (root / "bin" / "run.sh").chmod(0o700)
    (root / "src").chmod(0o775)
    assert store.put_tree(root) == before


def test_exclude_gets_posix_relative_paths(store: Store, tmp_path: Path) -> None:
    root = _sample(tmp_path / "t")
    _write(root / ".git" / "HEAD", b"ref: main\n")
    _write(root / "src" / "main.pyc", b"\0\0")
    seen: list[str] = []

    def exclude(rel: str) -> bool:
        seen.append(rel)
        return rel == ".git" or rel.endswith(".pyc")

    with_junk = store.put_tree(root, exclude=exclude)
    assert "src/main.py" in seen and "bin/run.sh" in seen
    assert ".git/HEAD" not in seen  # an excluded directory is not descended into
    paths = {e.path for e in store.get_tree(with_junk)}
    assert ".git" not in paths and "src/main.pyc" not in paths
    clean = _sample(tmp_path / "clean")
    assert with_junk == store.put_tree(clean)


def test_empty_tree(store: Store, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tree = store.put_tree(tmp_path / "empty")
    assert store.is_tree(tree)
    assert store.get_tree(tree) == []
    assert tree == store.put_tree_entries([])


def test_special_files_are_refused_unless_excluded(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(StoreError, match="neither a file"):
        store.put_tree(root)
    assert store.get_tree(store.put_tree(root, exclude=lambda p: p == "pipe")) == []


def test_put_tree_of_a_non_directory(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a directory"):
        store.put_tree(tmp_path / "missing")


def test_materialize_then_put_tree_gives_the_same_hash(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "src-tree"))
    out = tmp_path / "out"
    store.materialize(tree, out)
    assert store.put_tree(out) == tree
    assert (out / "link").is_symlink()
    assert os.readlink(out / "link") == "../outside/target"
    assert (out / "empty" / "nested").is_dir()
    assert os.stat(out / "bin" / "run.sh").st_mode & 0o111
    assert not os.stat(out / "README").st_mode & 0o111
    assert (out / "src" / "main.py").read_bytes() == b"print('hi')\n"


def test_materialize_copies_and_never_shares_inodes(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t"))
    out = tmp_path / "out"
    store.materialize(tree, out)
    blob = next(e.blob for e in store.get_tree(tree) if e.path == "README")
    assert blob is not None
    assert os.stat(out / "README").st_ino != os.stat(store.blob_path(blob)).st_ino
    (out / "README").write_bytes(b"mutated by a step")
    assert store.read_bytes(blob) == b"readme\n"
    assert store.verify() == []


def test_materialize_into_an_existing_destination(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t"))
    out = tmp_path / "out"
    _write(out / "README", b"old")
    _write(out / "unrelated.txt", b"keep me")
    store.materialize(tree, out)
    store.materialize(tree, out)  # twice is fine
    assert (out / "README").read_bytes() == b"readme\n"
    assert (out / "unrelated.txt").read_bytes() == b"keep me"


def test_materialize_replaces_a_stale_symlink_instead_of_writing_through_it(
    store: Store, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "README").write_bytes(b"outside")
    tree = store.put_tree(_sample(tmp_path / "t"))
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside / "README", out / "README")  # where the tree has a file
    os.symlink(outside, out / "src")  # where the tree has a directory
    store.materialize(tree, out)
    assert (outside / "README").read_bytes() == b"outside"
    assert sorted(p.name for p in outside.iterdir()) == ["README"]
    assert not (out / "README").is_symlink()
    assert (out / "src").is_dir() and not (out / "src").is_symlink()
    assert store.put_tree(out) == tree


def test_materialize_refuses_a_directory_in_the_way(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t"))
    out = tmp_path / "out"
    (out / "README").mkdir(parents=True)
    with pytest.raises(StoreError, match="directory is in the way"):
        store.materialize(tree, out)


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", "./a", "a//b", "a/", ""])
def test_tree_entries_reject_unsafe_paths(bad: str) -> None:
    with pytest.raises(StoreError):
        TreeEntry(bad, "dir", 0o755)


def test_tree_entry_field_rules() -> None:
    with pytest.raises(StoreError, match="blob"):
        TreeEntry("f", "file", 0o644)
    with pytest.raises(StoreError, match="target"):
        TreeEntry("l", "symlink", 0o777)
    with pytest.raises(StoreError, match="neither"):
        TreeEntry("d", "dir", 0o755, target="x")
    with pytest.raises(StoreError, match="kind"):
        TreeEntry("d", "socket", 0o755)  # type: ignore[arg-type]


def test_a_crafted_traversal_manifest_is_not_a_tree(store: Store, tmp_path: Path) -> None:
    blob = store.put_bytes(b"pwned")
    evil = {
        "entries": [{"blob": blob, "kind": "file", "mode": 420, "path": "../evil"}],
        "greenloop_tree": 1,
    }
    digest = store.put_bytes(json.dumps(evil, sort_keys=True, separators=(",", ":")).encode())
    assert not store.is_tree(digest)
    with pytest.raises(StoreError, match="not a tree"):
        store.get_tree(digest)
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(StoreError):
        store.materialize(digest, dest)
    assert not (tmp_path / "dest" / "evil").exists()


def test_materialize_never_writes_below_a_symlink(store: Store, tmp_path: Path) -> None:
    # Defence in depth: even entries that skip canonicalisation (no parent
    # directory entry) cannot write through a symlink already in dest.
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "a")
    blob = store.put_bytes(b"payload")
    with pytest.raises(StoreError, match="not a real directory"):
        materialize_entries([TreeEntry("a/f", "file", 0o644, blob=blob)], dest, store.open_blob)
    assert list(outside.iterdir()) == []


def test_entries_beneath_a_symlink_or_file_are_rejected(store: Store) -> None:
    blob = store.put_bytes(b"x")
    with pytest.raises(StoreError, match="beneath"):
        store.put_tree_entries(
            [
                TreeEntry("a", "symlink", 0o777, target="/etc"),
                TreeEntry("a/passwd", "file", 0o644, blob=blob),
            ]
        )
    with pytest.raises(StoreError, match="beneath"):
        store.put_tree_entries(
            [TreeEntry("f", "file", 0o644, blob=blob), TreeEntry("f/g", "dir", 0o755)]
        )


def test_put_tree_entries_matches_put_tree(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t"))
    entries = store.get_tree(tree)
    assert store.put_tree_entries(list(reversed(entries))) == tree
    # Parent directories are implied, and mode bits are normalised.
    only_leaves = [
        TreeEntry(e.path, e.kind, 0o600 if e.mode == 0o644 else e.mode, e.blob, e.target)
        for e in entries
        if e.kind != "dir" or e.path == "empty/nested"
    ]
    assert store.put_tree_entries(only_leaves) == tree


def test_put_tree_entries_requires_stored_blobs(store: Store) -> None:
    with pytest.raises(StoreError, match="missing blob"):
        store.put_tree_entries([TreeEntry("f", "file", 0o644, blob="1" * 64)])


def test_conflicting_duplicate_entries_are_rejected(store: Store) -> None:
    a, b = store.put_bytes(b"a"), store.put_bytes(b"b")
    with pytest.raises(StoreError, match="two different entries"):
        store.put_tree_entries(
            [TreeEntry("f", "file", 0o644, blob=a), TreeEntry("f", "file", 0o644, blob=b)]
        )


def test_is_tree_distinguishes_trees_from_blobs(store: Store, tmp_path: Path) -> None:
    tree = store.put_tree(_sample(tmp_path / "t"))
    assert store.is_tree(tree)
    plain = store.put_bytes(b"not a tree")
    assert not store.is_tree(plain)
    with pytest.raises(StoreError, match="not a tree"):
        store.get_tree(plain)
    # Same content, non-canonical spelling: a user's JSON file, not a tree.
    spaced = store.put_bytes(b'{"entries": [], "greenloop_tree": 1}')
    assert not store.is_tree(spaced)
