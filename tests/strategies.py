"""Hypothesis strategies for hostile input: frames of every op with any name and payload."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from hycan._protocol import Op, encode_request

# Any code point, lone surrogates and control characters included.
JSON_TEXT = st.text(st.characters(codec=None, categories=None, exclude_categories=()), max_size=20)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(JSON_TEXT, st.one_of(st.integers(), JSON_TEXT, st.booleans()), max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
    st.integers(min_value=1, max_value=2048).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=800).map(lambda n: b'{"a":' * n),
)
# Every op but WATCH, which turns a connection into an event stream (no more replies:
# tests/test_watch.py attacks it on its own).
REQUEST_OPS = [op for op in Op if op is not Op.WATCH]
FRAMES = st.tuples(
    st.sampled_from([*REQUEST_OPS, 0x3F, 0x7E, 0x99]), st.binary(max_size=40), PAYLOADS
).map(lambda t: encode_request(t[0], t[1], t[2] if 0x40 <= t[0] <= 0x7F else b""))
