"""The jail's unprivileged-mode building blocks, each in a forked child that is not root.

The whole jail in that mode (every layer, every attack) is exercised by the
escape suite with the service as uid 10001; these pin down the pieces that
differ from root mode.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import pytest

from sandbox.jail import mountns, privileges, userns
from sandbox.jail.libc import prctl

UID = 10001
GID = 10001


def as_unprivileged(
    work: Callable[[], object],
    groups: tuple[int, ...] = (),
    prepare: Callable[[], None] | None = None,
) -> dict:
    """Run `work` in a child that dropped to UID/GID (no capability left); its result or error.

    `prepare` runs first in the child, still as root.
    """
    if os.geteuid() != 0:
        pytest.fail("these tests start as root and drop to an unprivileged uid themselves")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            if prepare is not None:
                prepare()
            os.setgroups(list(groups))
            os.setresgid(GID, GID, GID)
            os.setresuid(UID, UID, UID)  # clears every capability: euid leaves 0
            # Dumpable again, as a process exec'd as that uid is (a uid change
            # resets it, which would make /proc/self root's).
            prctl(privileges.PR_SET_DUMPABLE, 1)
            outcome = {"value": work()}
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            outcome = {"error": f"{type(error).__name__}: {error}"}
        os.write(write_end, json.dumps(outcome, default=str).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_the_launcher_check_accepts_only_its_own_group() -> None:
    assert as_unprivileged(privileges.check_unprivileged_launcher) == {"value": None}
    assert as_unprivileged(privileges.check_unprivileged_launcher, groups=(GID,)) == {"value": None}
    refused = as_unprivileged(privileges.check_unprivileged_launcher, groups=(GID, 27))
    assert "supplementary groups [27]" in refused.get("error", ""), refused


def test_the_check_refuses_root() -> None:
    with pytest.raises(OSError, match="as root"):
        privileges.check_unprivileged_launcher()


def test_the_jail_uid_maps_to_the_callers_uid_and_nothing_else() -> None:
    def enter() -> object:
        userns.enter(65534, 65534, os.geteuid(), os.getegid())
        return {
            "uid": os.getuid(),
            "uid_map": open("/proc/self/uid_map").read().split(),
            "gid_map": open("/proc/self/gid_map").read().split(),
            "setgroups": open("/proc/self/setgroups").read().strip(),
        }

    assert as_unprivileged(enter) == {
        "value": {
            "uid": 65534,
            "uid_map": ["65534", str(UID), "1"],
            "gid_map": ["65534", str(GID), "1"],
            "setgroups": "deny",
        }
    }


def test_the_jail_uid_never_maps_to_root() -> None:
    with pytest.raises(ValueError, match="never maps to root"):
        userns.enter(65534, 65534, 0, 0)


def test_a_read_only_bind_keeps_the_locked_flags_of_its_source() -> None:
    """A mount inherited into a user namespace has its nosuid/nodev/noexec locked:
    a remount that drops one is EPERM, so the jail's bind adds the source's flags."""
    area = tempfile.mkdtemp(prefix="pagi-bind-")
    os.chmod(area, 0o755)
    source, target = f"{area}/source", f"{area}/target"
    os.mkdir(source)
    os.mkdir(target)

    def mount_source() -> None:  # as root, in the child's own mount namespace
        mountns.make_private()
        flags = mountns.MS_NOSUID | mountns.MS_NODEV | mountns.MS_NOEXEC
        mountns._mount("tmpfs", source, "tmpfs", flags, "size=64k")
        mountns._mount("tmpfs", target, "tmpfs", 0, "size=64k,mode=0777")
        os.mkdir(f"{target}/bound")
        os.chown(f"{target}/bound", UID, GID)

    def bind() -> object:
        userns.enter(65534, 65534, os.geteuid(), os.getegid())
        mountns.make_private()  # copies the mounts, locking their flags
        # Asks only for read-only: the source's locked flags must be added.
        mountns._bind(source, f"{target}/bound", mountns.MS_RDONLY)
        flags = os.statvfs(f"{target}/bound").f_flag
        return {
            "rdonly": bool(flags & os.ST_RDONLY),
            "nosuid": bool(flags & os.ST_NOSUID),
            "nodev": bool(flags & os.ST_NODEV),
            "noexec": bool(flags & os.ST_NOEXEC),
        }

    try:
        outcome = as_unprivileged(bind, prepare=mount_source)
    finally:
        os.rmdir(source)
        os.rmdir(target)
        os.rmdir(area)
    assert outcome == {"value": {"rdonly": True, "nosuid": True, "nodev": True, "noexec": True}}, (
        outcome
    )
