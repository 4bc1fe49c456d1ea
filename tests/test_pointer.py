"""The latest-green pointer codec: byte-stable render, strict parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenloop.protocol import BuildIdentity, PointerFormatError, PublishedArtifact
from greenloop.protocol.pointer import HEADER, KEYS

hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
triples = st.from_regex(r"[A-Za-z0-9_.\-]{1,30}", fullmatch=True)
identities = st.builds(
    BuildIdentity,
    source_tree=hashes,
    lockfiles=hashes,
    toolchain=hashes,
    config=hashes,
    pipeline=hashes,
    target=triples,
    profile=st.sampled_from(["dev", "release"]),
)
pointers = st.builds(
    PublishedArtifact,
    input_hash=hashes,
    artifact=hashes,
    identity=identities,
    published_at=st.integers(min_value=0, max_value=2**63),
)


def sample() -> PublishedArtifact:
    identity = BuildIdentity(
        source_tree="1" * 64,
        lockfiles="2" * 64,
        toolchain="3" * 64,
        config="4" * 64,
        pipeline="5" * 64,
        target="wasm32-unknown-unknown",
        profile="dev",
    )
    return PublishedArtifact(
        input_hash="6" * 64, artifact="7" * 64, identity=identity, published_at=1700000000
    )


@given(pointers)
def test_render_then_parse_is_identity(pointer: PublishedArtifact) -> None:
    text = pointer.render()
    assert PublishedArtifact.parse(text) == pointer
    assert PublishedArtifact.parse(text.encode()).render() == text


def test_render_is_byte_stable_and_ordered() -> None:
    text = sample().render()
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert [line.split("=", 1)[0] for line in lines[1:]] == list(KEYS)
    assert text.endswith("\n")
    assert sample().render() == text


def test_unknown_keys_are_tolerated() -> None:
    text = sample().render() + "future_key=whatever\n"
    assert PublishedArtifact.parse(text) == sample()


def _replace(text: str, key: str, value: str) -> str:
    return "".join(
        f"{key}={value}\n" if line.startswith(key + "=") else line + "\n"
        for line in text.splitlines()
    )


def _drop(text: str, key: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(key + "="))


GOOD = sample().render()
CORRUPTIONS = {
    "missing header": GOOD.split("\n", 1)[1],
    "wrong header": GOOD.replace(HEADER, "greenloop-latest-green/v2"),
    "empty": "",
    "line without =": GOOD + "garbage\n",
    "not newline-terminated": GOOD.rstrip("\n"),
    "bad profile": _replace(GOOD, "profile", "debug"),
    "non-integer timestamp": _replace(GOOD, "published_at", "12.5"),
    "negative timestamp": _replace(GOOD, "published_at", "-1"),
    "bad hash": _replace(GOOD, "artifact", "zz"),
    "duplicate key": GOOD + "profile=dev\n",
    **{f"missing {key}": _drop(GOOD, key) for key in KEYS},
}


@pytest.mark.parametrize("text", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corruptions_are_format_errors(text: str) -> None:
    with pytest.raises(PointerFormatError):
        PublishedArtifact.parse(text)


@given(st.binary(max_size=600))
def test_random_bytes_never_half_decode(data: bytes) -> None:
    try:
        PublishedArtifact.parse(data)
    except PointerFormatError:
        return
    raise AssertionError("random bytes parsed as a pointer")


@given(pointers, st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=3))
def test_mutated_pointers_parse_strictly_or_fail(
    pointer: PublishedArtifact, at: int, junk: bytes
) -> None:
    raw = pointer.render().encode()
    at %= len(raw)
    mutated = raw[:at] + junk + raw[at + 1 :]
    try:
        parsed = PublishedArtifact.parse(mutated)
    except PointerFormatError:
        return
    # Anything that still parses must round-trip exactly: never a half-decoded pointer.
    assert PublishedArtifact.parse(parsed.render()) == parsed
