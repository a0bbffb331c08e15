"""Interface names exactly as the kernel checks them, plus hycan's stricter rules.

The reference is a direct port of the kernel's ``dev_valid_name()`` (net/core/dev.c) and
of the ``_S`` bits of its ``isspace()`` table (lib/ctype.c), written here independently of
``hycan._names``; the netns test asks the real kernel.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hycan
from hycan._names import _problem, encode_name, name_problem
from hycan._protocol import Op, Request, RequestDecoder, encode_request
from tests.conftest import Netns

# lib/ctype.c: _S is set for 9-13 (\t\n\v\f\r), 32 (space) and 160 (0xA0).
KERNEL_ISSPACE = frozenset([9, 10, 11, 12, 13, 32, 160])


def kernel_dev_valid_name(name: bytes) -> bool:
    """``dev_valid_name()`` on ``name`` as the C string the kernel gets (up to a NUL)."""
    name = name.split(b"\0", 1)[0]
    if not name:
        return False
    if len(name) >= 16:  # strnlen(name, IFNAMSIZ) == IFNAMSIZ
        return False
    if name in (b".", b".."):
        return False
    return not any(b in b"/:" or b in KERNEL_ISSPACE for b in name)


def hycan_stricter(name: bytes) -> bool:
    """What hycan refuses beyond the kernel: ASCII control bytes, '%' and invalid UTF-8."""
    if any(b < 0x20 or b == 0x7F for b in name) or b"%" in name:
        return True
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


NAMES = st.one_of(
    st.binary(max_size=17),
    st.text(max_size=16).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        ["à", "\u00a0", "Ġ", "x\u2028", "é1", "a" * 15, "a" * 16, ".", "..", "a:b", "x%d", "%"]
    ).map(str.encode),
)


@given(NAMES)
def test_names_are_exactly_the_kernels_plus_hycans_stricter_rules(name: bytes) -> None:
    valid = name_problem(name) is None
    assert valid == (kernel_dev_valid_name(name) and not hycan_stricter(name))


@given(st.text("abcXYZ019_.-/:%\n", max_size=17).map(str.encode))
def test_the_plain_name_fast_path_answers_as_the_full_checks(name: bytes) -> None:
    assert name_problem(name) == _problem(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("à".encode(), "0xa0"),
        ("x\u00a0y".encode(), "0xa0"),
        (b"a\x1b[31m", "control bytes 0x1b"),
        (b"a\x00b", "control bytes 0x00"),
        (b"a\x7f", "control bytes 0x7f"),
        (b"a b", "whitespace"),
        (b"\xff", "not valid UTF-8"),
        (b"x%d", "pattern"),
        (b"a%", "pattern"),
    ],
)
def test_refusals_say_why_and_quote_the_name_safely(name: bytes, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None and reason in problem
    assert problem.isprintable()  # the message itself carries no control character
    with pytest.raises(hycan.InvalidName):
        encode_name(name)
    decoder = RequestDecoder()
    decoder.receive_data(encode_request(Op.INTERFACE_UP, name))
    event = decoder.next_event()
    assert not isinstance(event, Request) and event.code == hycan.ErrorCode.INVALID_NAME


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    names = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
    accepted = []
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="veth1")[0]
        for name in names:
            try:
                ipr.link("set", index=index, ifname=name.decode("utf-8"))
            except NetlinkError:
                accepted.append(False)
                continue
            accepted.append(True)
            ipr.link("set", index=index, ifname="veth1")
    print(json.dumps(accepted))
    """
)


@pytest.mark.netns
def test_the_kernel_accepts_exactly_the_names_hycan_accepts(netns: Netns) -> None:
    # Names hycan's stricter rules do not already refuse (those never reach the kernel).
    candidates = [
        "veth-x",
        "à",
        "\u00a0",
        "Ġ",
        "é",
        "ab\u00a0",
        "a" * 15,
        "a" * 16,
        ".",
        "..",
        "a:b",
        "a/b",
        "a b",
        "a\tb",
        "\u2028",
        "x\u0085",
        "\u200e",
        "ß",
        "日本",
        "\u2013",
        "\u3000",
        "\U0001d518",
        "..a",
        "-",
        "_",
        "@",
        "a.b",
        "caño",
        "Ω",
        "\u00ad",
        "\ufeff",
        "ÿ",
        "Ā",
        "ŀ",
        "Ƞ",
    ]
    names = [c.encode() for c in candidates]
    result = netns.python(SCRIPT, stdin=json.dumps([n.hex() for n in names]))
    assert result.returncode == 0, result.stderr
    kernel = json.loads(result.stdout)
    hycan_ok = [name_problem(n) is None for n in names]
    assert kernel == hycan_ok, [
        (c, k, h) for c, k, h in zip(candidates, kernel, hycan_ok, strict=True) if k != h
    ]
    assert not kernel[candidates.index("à")]  # the byte 0xA0 the kernel counts as space
