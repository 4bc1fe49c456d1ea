"""``greenloop cache``: inspect and maintain the content-addressed store."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from greenloop.cli._common import echo_json, fail, json_option, open_store
from greenloop.plugins.discovery import Executors
from greenloop.protocol import PluginFailure, SetupError
from greenloop.store import Store, StoreError, clean, default_root
from greenloop.store.transfer import TransferReport, export_cache, import_cache


@click.group()
def cache() -> None:
    """Inspect and maintain the local cache (the content-addressed store)."""


@cache.command()
@json_option
def path(as_json: bool) -> None:
    """Print where the store lives (set GREENLOOP_CACHE_DIR to move it)."""
    if as_json:
        echo_json({"path": str(default_root())})
        return
    click.echo(str(default_root()))


@cache.command()
@click.option("-n", "--runs", "last", type=click.IntRange(min=1), default=20, help="Runs to count.")
@json_option
def stats(last: int, as_json: bool) -> None:
    """Show the store's size, and the local and remote cache hits and misses of the last runs."""
    store = open_store()
    try:
        runs = store.index.runs(limit=last)
        steps = [s for r in runs for s in store.index.steps(r.run_id)]
        remote = store.index.remote_stats([r.run_id for r in runs])
        data: dict[str, Any] = {
            "root": str(store.root),
            "size_bytes": store.size_bytes(),
            "checkout_bytes": store.checkout_bytes(),
            "entries": len(store.index.entries()),
            "runs": len(runs),
            "hits": sum(s.cached for s in steps),
            "misses": sum(s.status in ("passed", "failed") for s in steps),
            "cache_dirs": [dataclasses.asdict(u) for u in store.cache_dirs.usage()],
        }
    finally:
        store.close()
    remote_hits = sum(r.hits for r in remote)
    # A remote hit is imported and then reported as a cached step, so the
    # local cache answered only the cached steps the remote did not.
    data["local"] = {"hits": data["hits"] - remote_hits, "misses": data["misses"] + remote_hits}
    data["remote"] = {
        "runs": len(remote),
        "urls": sorted({r.url for r in remote}),
        "lookups": sum(r.lookups for r in remote),
        "hits": remote_hits,
        "misses": sum(r.misses for r in remote),
        "errors": sum(r.errors for r in remote),
        "published": sum(r.published for r in remote),
        "blobs_uploaded": sum(r.blobs_uploaded for r in remote),
        "bytes_uploaded": sum(r.bytes_uploaded for r in remote),
        "blobs_downloaded": sum(r.blobs_downloaded for r in remote),
        "bytes_downloaded": sum(r.bytes_downloaded for r in remote),
        "last_warning": next((r.warning for r in remote if r.warning), None),
    }
    if as_json:
        echo_json(data)
        return
    total = data["hits"] + data["misses"]
    rate = f"{100 * data['hits'] / total:.0f}%" if total else "-"
    click.echo(f"store    {data['root']}")
    click.echo(f"size     {data['size_bytes'] / 1e6:.1f} MB, {data['entries']} cache entries")
    if data["checkout_bytes"]:
        click.echo(f"         {_size(data['checkout_bytes'])} in checkouts (rebuilt when needed)")
    click.echo(f"last {data['runs']} runs: {data['hits']} hits, {data['misses']} misses ({rate})")
    local = data["local"]
    click.echo(f"  local  {local['hits']} hits, {local['misses']} misses")
    for usage in data["cache_dirs"]:
        click.echo(f"cache dir {usage['name']}: {_size(usage['size_bytes'])}")
    r = data["remote"]
    if not r["runs"]:
        click.echo("  remote not used (see --remote-cache)")
        return
    click.echo(
        f"  remote {r['hits']} hits, {r['misses']} misses, {r['errors']} errors in "
        f"{r['runs']} runs ({', '.join(r['urls'])})"
    )
    click.echo(
        f"         {_size(r['bytes_downloaded'])} downloaded "
        f"({r['blobs_downloaded']} blobs), {_size(r['bytes_uploaded'])} uploaded "
        f"({r['blobs_uploaded']} blobs, "
        f"{r['published']} entries)"
    )
    if r["last_warning"]:
        click.echo(f"         last warning: {r['last_warning']}")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@cache.command()
@click.option("--max-age-days", type=float, default=30.0, show_default=True)
@click.option("--max-size-mb", type=float, default=None, help="Shrink the store to this size.")
@click.option(
    "--cache-dirs",
    "all_cache_dirs",
    is_flag=True,
    help="Also empty every cache folder (cache_dirs=) no step is using; without it, only "
    "those unused for --max-age-days go.",
)
@json_option
def gc(max_age_days: float, max_size_mb: float | None, all_cache_dirs: bool, as_json: bool) -> None:
    """Drop old cache entries, every object nothing recent references, and old cache folders."""
    store = open_store()
    try:
        report = store.gc(
            max_age=timedelta(days=max_age_days),
            max_bytes=int(max_size_mb * 1e6) if max_size_mb is not None else None,
        )
        unused_for = 0.0 if all_cache_dirs else max_age_days * 86400
        cache_dirs = store.cache_dirs.remove(unused_for=unused_for, now=time.time())
        snapshots = _executor_gc(store)
    finally:
        store.close()
    if as_json:
        echo_json(
            {
                **report.__dict__,
                "cache_dirs_removed": cache_dirs,
                "executor_snapshots_removed": snapshots,
            }
        )
        return
    click.echo(
        f"removed {report.entries_removed} entries, {report.objects_removed} objects "
        f"({report.bytes_freed / 1e6:.1f} MB), {report.temp_files_removed} temp files, "
        f"{report.checkouts_removed} checkouts"
    )
    if cache_dirs:
        click.echo(f"removed cache dirs: {', '.join(cache_dirs)}")
    for name, removed in snapshots.items():
        click.echo(f"{name}: " + (f"removed {removed} snapshots" if removed >= 0 else "skipped"))


def _executor_gc(store: Store) -> dict[str, int]:
    """Let each executor that keeps its own snapshots (docker images) drop unreferenced ones.

    Returns removed counts by executor; -1 when the executor could not be reached.
    """
    entries = store.index.entries()
    executors = Executors(store)
    removed: dict[str, int] = {}
    for name in sorted({"docker", *(e.executor for e in entries)}):
        try:
            collect = getattr(executors(name), "collect_garbage", None)
            if collect is not None:
                removed[name] = collect({e.snapshot for e in entries if e.executor == name})
        except (SetupError, PluginFailure) as e:
            click.echo(f"warning: {name} snapshots not collected: {e}", err=True)
            removed[name] = -1
    return removed


@cache.command()
@json_option
def verify(as_json: bool) -> None:
    """Check every stored object against its hash (exit 1 if any is corrupt).

    Temp files a killed writer left are listed apart: they never became objects,
    and `greenloop cache gc` removes them.
    """
    store = open_store()
    try:
        bad = store.verify()
        leftovers = store.leftovers()
    finally:
        store.close()
    if as_json:
        echo_json({"corrupt": bad, "leftovers": [dataclasses.asdict(x) for x in leftovers]})
    else:
        for digest in bad:
            click.echo(f"corrupt: {digest}")
        for leftover in leftovers:
            what = "a write in progress" if leftover.in_progress else "left by a killed write"
            click.echo(f"leftover: {leftover.path} ({leftover.size} bytes, {what})")
        click.echo("store is intact" if not bad else f"{len(bad)} corrupt object(s)")
        if leftovers:
            click.echo(
                f"{len(leftovers)} temp file(s) are not objects; `greenloop cache gc` removes them"
            )
    if bad:
        raise SystemExit(1)


@cache.command("clean")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def clean_command(yes: bool, as_json: bool) -> None:
    """Delete the whole store (refuses if the folder is not a greenloop store)."""
    root = default_root()
    deleted = root.exists()
    if deleted:
        if not yes:
            click.confirm(f"delete the greenloop store at {root}?", abort=True)
        try:
            clean(root)
        except StoreError as e:
            fail(str(e))
    if as_json:
        echo_json({"path": str(root), "deleted": deleted})
    else:
        click.echo(f"deleted {root}" if deleted else f"nothing to clean at {root}")


@cache.command("export")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@json_option
def export_command(folder: Path, as_json: bool) -> None:
    """Write every cache entry and the objects it needs into FOLDER (to carry to another
    machine with no cache server between them; `greenloop cache import` reads it)."""
    store = open_store()
    try:
        report = export_cache(store, folder)
    except (StoreError, OSError) as e:
        fail(f"cannot export the cache to {folder}: {e}")
    finally:
        store.close()
    _transferred("exported", report, folder, as_json)


@cache.command("import")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@json_option
def import_command(folder: Path, as_json: bool) -> None:
    """Bring the cache entries a `greenloop cache export` wrote into FOLDER into this store;
    every object is verified against its hash, and entries already here are kept."""
    store = open_store()
    try:
        report = import_cache(store, folder)
    except (StoreError, OSError) as e:
        fail(str(e))
    finally:
        store.close()
    _transferred("imported", report, folder, as_json)


def _transferred(verb: str, report: TransferReport, folder: Path, as_json: bool) -> None:
    if as_json:
        echo_json({"folder": str(folder), **dataclasses.asdict(report)})
        return
    click.echo(
        f"{verb} {report.entries} entries ({report.objects} objects, {_size(report.bytes)}) "
        f"{'to' if verb == 'exported' else 'from'} {folder}"
    )
    for line in report.skipped:
        click.echo(f"  skipped {line}")
