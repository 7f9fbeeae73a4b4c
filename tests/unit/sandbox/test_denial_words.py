"""Denials in words: decoded calls, the decisive-argument table, bounding."""

from __future__ import annotations

from sandbox.denials import MAX_DENIALS, bounded, describe_call, stderr_lines
from sandbox.host.bpf import _number
from sandbox.jail.seccomp import DECISIVE_ARGUMENTS
from sandbox.spec import Denial


def test_the_decisive_argument_table_names_the_right_syscalls() -> None:
    named = {
        "socket": 41,
        "clone": 56,
        "kill": 62,
        "fcntl": 72,
        "ptrace": 101,
        "prctl": 157,
        "keyctl": 250,
        "unshare": 272,
        "setns": 308,
        "seccomp": 317,
        "bpf": 321,
        "pidfd_open": 434,
    }
    assert {name: _number(name) for name in named} == named
    assert set(named.values()) <= set(DECISIVE_ARGUMENTS)


def test_calls_are_described_in_words() -> None:
    assert describe_call(41, (16, 3 | 0x80000)) == ("socket", "socket(AF_NETLINK, SOCK_RAW)")
    assert describe_call(41, (99, 1))[1] == "socket(99, SOCK_STREAM)"
    assert describe_call(272, (0x10000000 | 0x20000,))[1] == "unshare(CLONE_NEWNS|CLONE_NEWUSER)"
    assert describe_call(308, (0,))[1] == "setns(any namespace)"
    assert describe_call(157, (22,))[1] == "prctl(PR_SET_SECCOMP)"
    assert describe_call(425, ()) == ("io_uring_setup", "io_uring_setup")


def test_the_list_is_bounded_and_aggregated() -> None:
    many = [
        Denial(layer="seccomp", what=f"call{index % 50}", count=1, hint="h") for index in range(200)
    ]
    denials = bounded(many)
    assert len(denials) == MAX_DENIALS
    assert sum(d.count for d in denials) == 200
    assert denials[-1].what == f"{50 - MAX_DENIALS + 1} further kinds of refusal"
    assert stderr_lines(denials[:1]) == "pagi-sandbox: refused call0 (4 times): h\n"
