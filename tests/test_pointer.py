"""The latest-green pointer codec: byte-stable render, strict parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

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


# -- bytes in: a PointerFormatError or a valid pointer out, never anything else -------

_values = st.one_of(
    hashes,
    triples,
    st.sampled_from(["dev", "release", "", "-1", "0", "1" * 19, str(2**64), "1e3"]),
    st.sampled_from(["\u0663", "\uff11", "\u00b2", " 1", "1 "]),  # digits str.isdigit() accepts
    st.integers(min_value=0, max_value=2**70).map(str),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "9" * n),  # past int()'s limit
    st.text(max_size=80),
)
_lines = st.one_of(
    st.tuples(st.sampled_from(KEYS), _values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.text(max_size=20), st.text(max_size=20)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=40),
)


@st.composite
def near_pointers(draw: st.DrawFn) -> bytes:
    """Pointer-shaped documents: mostly the right header and keys, any values."""
    base = draw(pointers).render().splitlines()
    header = draw(st.sampled_from([HEADER, HEADER, HEADER, "", HEADER + "\r", "GREENLOOP"]))
    lines = draw(
        st.one_of(
            st.lists(_lines, max_size=14),
            # The real lines, a few replaced or added: past the cheap checks, into the values.
            st.tuples(st.just(base[1:]), st.lists(_lines, max_size=3)).map(
                lambda parts: [*parts[0][: len(parts[0]) - len(parts[1])], *parts[1]]
            ),
        )
    )
    end = draw(st.sampled_from(["\n", "\n", "", "\r\n"]))
    text = "\n".join([header, *lines]) + end
    return text.encode("utf-8", "surrogatepass")


@given(st.one_of(near_pointers(), st.binary(max_size=300)))
def test_any_bytes_give_a_format_error_or_a_pointer_that_round_trips(data: bytes) -> None:
    try:
        parsed = PublishedArtifact.parse(data)
    except PointerFormatError as e:
        assert str(e)  # a reason a person can read
        return
    # Anything accepted is a whole, valid record: rendering it gives a pointer that
    # parses back to exactly the same record.
    assert PublishedArtifact.parse(parsed.render()) == parsed
    assert PublishedArtifact.parse(parsed.render().encode()).render() == parsed.render()


@pytest.mark.parametrize("value", ["9" * 5000, str(2**64), "1" * 21])
def test_a_timestamp_out_of_range_is_a_format_error(value: str) -> None:
    with pytest.raises(PointerFormatError, match="published_at"):
        PublishedArtifact.parse(_replace(GOOD, "published_at", value))


def test_the_largest_timestamp_round_trips_and_no_larger_one_is_made() -> None:
    text = _replace(GOOD, "published_at", str(2**64 - 1))
    assert PublishedArtifact.parse(text).render() == text
    with pytest.raises(ValidationError):
        PublishedArtifact.model_validate({**sample().model_dump(), "published_at": 2**64})
