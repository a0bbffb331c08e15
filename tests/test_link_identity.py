"""The fast path that reads a link notification's name, alias and altnames
(``hycan.backends._linkkinds.identity``) answers exactly what walking every attribute does."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hycan.backends._linkkinds import identity
from hycan.backends._linkmsg import IFLA_IFALIAS, IFLA_IFNAME, IFLA_PROP_LIST, attributes, string

FLAGS = st.sampled_from([0, 0x4000, 0x8000, 0xC000])
NAMES = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=15)


def attribute(kind: int, payload: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind)
    return header + payload + b"\0" * (-len(payload) % 4)


@st.composite
def link_attributes(draw: st.DrawFn) -> bytes:
    """Attribute lists like a notification's: mostly the name first, counters whose bytes
    may look like the alias's or altnames' type, sometimes an alias or altnames anywhere."""
    parts = [
        attribute(draw(st.integers(1, 60)) | draw(FLAGS), draw(st.binary(max_size=40)))
        for _ in range(draw(st.integers(0, 12)))
    ]
    # Payloads that hold the very bytes the fast path looks for, at every alignment.
    parts += [
        attribute(7, b"\0" * draw(st.integers(0, 3)) + struct.pack("=H", t | draw(FLAGS)))
        for t in draw(st.lists(st.sampled_from([IFLA_IFALIAS, IFLA_PROP_LIST]), max_size=3))
    ]
    if draw(st.booleans()):
        alias = draw(NAMES).encode() + b"\0"
        parts.insert(draw(st.integers(0, len(parts))), attribute(IFLA_IFALIAS, alias))
    if draw(st.booleans()):
        nested = attribute(53, draw(NAMES).encode() + b"\0")
        parts.insert(
            draw(st.integers(0, len(parts))), attribute(IFLA_PROP_LIST | draw(FLAGS), nested)
        )
    parts = draw(st.permutations(parts))
    if draw(st.integers(0, 9)):  # as the kernel writes it: the name first
        parts.insert(0, attribute(IFLA_IFNAME, draw(NAMES).encode() + b"\0"))
    return b"".join(parts)


def walked(data: bytes, start: int) -> tuple[str | None, str | None, bool]:
    found = attributes(
        data, start, len(data), frozenset({IFLA_IFNAME, IFLA_IFALIAS, IFLA_PROP_LIST})
    )
    name = string(data, found[IFLA_IFNAME]) if IFLA_IFNAME in found else None
    alias = string(data, found[IFLA_IFALIAS]) if IFLA_IFALIAS in found else None
    return name, alias, IFLA_PROP_LIST in found


@settings(max_examples=600)
@given(attrs=link_attributes(), prefix=st.integers(0, 3))
def test_the_fast_path_agrees_with_the_full_walk(attrs: bytes, prefix: int) -> None:
    data = b"\xaa" * (4 * prefix + 32) + attrs  # headers before the attributes
    start = 4 * prefix + 32
    assert identity(data, start, len(data)) == walked(data, start)


@given(data=st.binary(max_size=200), start=st.integers(0, 8))
def test_any_bytes_get_the_same_answer_as_the_walk(data: bytes, start: int) -> None:
    assert identity(data, start, len(data)) == walked(data, start)
