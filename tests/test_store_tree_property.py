"""Property test: the tree hash depends on content only, and on every bit of it."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenloop.store import Store


@dataclass(frozen=True)
class _Dir:
    pass


@dataclass(frozen=True)
class _File:
    content: bytes
    executable: bool


@dataclass(frozen=True)
class _Link:
    target: str


_Node = _Dir | _File | _Link
_Spec = dict[str, _Node]
"""A tree as relative POSIX path -> node; every parent of a path is a _Dir."""

_names = st.sampled_from(["a", "b", "c.txt", "é", "Z"])
_leaf = st.builds(_File, st.binary(max_size=6), st.booleans()) | st.builds(
    _Link, st.sampled_from(["a", "../up", "/abs/path", "b/c"])
)
_nested = st.recursive(_leaf, lambda kids: st.dictionaries(_names, kids, max_size=3), max_leaves=8)
_trees = st.dictionaries(_names, _nested, max_size=4)


def _flatten(tree: dict[str, object], prefix: str = "") -> _Spec:
    spec: _Spec = {}
    for name, node in tree.items():
        path = prefix + name
        if isinstance(node, dict):
            spec[path] = _Dir()
            spec.update(_flatten(node, path + "/"))
        else:
            assert isinstance(node, _File | _Link)
            spec[path] = node
    return spec


def _build(spec: _Spec, root: Path, seed: int, loose_modes: bool) -> None:
    """Create ``spec`` under ``root`` in a seed-dependent order, with varying mode bits."""
    root.mkdir()
    order = sorted(spec)
    random.Random(seed).shuffle(order)
    for rel in order:
        node = spec[rel]
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(node, _Dir):
            path.mkdir(exist_ok=True)
            if loose_modes:
                path.chmod(0o700)
        elif isinstance(node, _File):
            path.write_bytes(node.content)
            exec_mode, plain_mode = (0o700, 0o600) if loose_modes else (0o755, 0o644)
            path.chmod(exec_mode if node.executable else plain_mode)
        else:
            os.symlink(node.target, path)


def _mutations(spec: _Spec) -> list[str]:
    options = ["add_file"]
    for rel, node in sorted(spec.items()):
        options.append(f"rename:{rel}")
        if isinstance(node, _File):
            options += [f"content:{rel}", f"exec:{rel}", f"remove:{rel}"]
        elif isinstance(node, _Link):
            options += [f"target:{rel}", f"remove:{rel}"]
        else:
            options.append(f"subdir:{rel}")
    return options


def _mutate(spec: _Spec, mutation: str) -> _Spec:
    """``spec`` with exactly one change applied."""
    kind, _, rel = mutation.partition(":")
    node = spec.get(rel)
    out = dict(spec)
    if kind == "add_file":
        out["new-file"] = _File(b"", False)
    elif kind == "remove":
        del out[rel]
    elif kind == "content" and isinstance(node, _File):
        out[rel] = replace(node, content=node.content + b"!")
    elif kind == "exec" and isinstance(node, _File):
        out[rel] = replace(node, executable=not node.executable)
    elif kind == "target" and isinstance(node, _Link):
        out[rel] = _Link(node.target + "x")
    elif kind == "subdir":
        out[rel + "/new-dir"] = _Dir()
    elif kind == "rename":
        parent, _, _ = rel.rpartition("/")
        new = (parent + "/" if parent else "") + "renamed"
        out = {}
        for path, item in spec.items():
            if path == rel or path.startswith(rel + "/"):
                path = new + path[len(rel) :]
            out[path] = item
    else:
        raise AssertionError(f"unknown mutation {mutation}")
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    # One store for all examples: content addressing makes sharing harmless.
    base = tmp_path_factory.mktemp("tree-property")
    with Store.open(base / "store") as store:
        yield store, base


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=_trees, seeds=st.tuples(st.integers(), st.integers()), data=st.data())
def test_tree_hash_is_canonical_and_sensitive(
    shared: tuple[Store, Path],
    tree: dict[str, object],
    seeds: tuple[int, int],
    data: st.DataObject,
) -> None:
    store, base = shared
    spec = _flatten(tree)
    with tempfile.TemporaryDirectory(dir=base) as work:
        # Same tree, different creation order and different (same-class) modes.
        first = Path(work) / "first"
        second = Path(work) / "second"
        _build(spec, first, seeds[0], loose_modes=False)
        _build(spec, second, seeds[1], loose_modes=True)
        digest = store.put_tree(first)
        assert store.put_tree(second) == digest

        out = Path(work) / "materialized"
        store.materialize(digest, out)
        assert store.put_tree(out) == digest

        mutation = data.draw(st.sampled_from(_mutations(spec)), label="mutation")
        changed = Path(work) / "changed"
        _build(_mutate(spec, mutation), changed, seeds[0], loose_modes=False)
        assert store.put_tree(changed) != digest
