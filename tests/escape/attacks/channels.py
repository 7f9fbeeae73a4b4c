"""Channels through what runs share: marks on shared files, locks on shared inodes.

A run must leave nothing a later run can read and see nothing a concurrent
run does. Single-run attempts here; the same channels between two runs
(concurrent and one after the other) are in ``test_cross_run.py``.
"""

from __future__ import annotations

import errno

from tests.escape.harness import Attack, Outcome, layer_of

MARK_SHARED_FILES = r"""
import sys
paths = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
         "/etc/ld.so.cache", sys.executable, "/usr", "/", "/dev", "/etc"]
paths += [path for path in ("/usr/lib/os-release", "/usr/bin/env") if os.path.exists(path)]


def identity(path):
    status = os.stat(path)
    return [status.st_mode, status.st_uid, status.st_atime_ns, status.st_mtime_ns,
            status.st_ctime_ns]


labels = []
before = {path: identity(path) for path in paths}
for path in paths:
    for name, action, syscall in (
        ("times", lambda: os.utime(path, ns=(0, 0)), "utimensat"),
        ("touch", lambda: os.utime(path), "utimensat"),
        ("chmod", lambda: os.chmod(path, before[path][0] & 0o7777), ["chmod", "fchmodat"]),
        ("chown", lambda: os.chown(path, -1, -1), ["chown", "fchownat"]),
        ("xattr", lambda: os.setxattr(path, "user.mark", b"1"), "setxattr"),
    ):
        labels.append(f"{name}:{path}")
        attempt(labels[-1], action, syscall=syscall, path=path)
after = {path: identity(path) for path in paths}
report("tried", labels=labels)
reached("marks")
report("marks", changed=[path for path in paths if before[path] != after[path]])
"""


def no_mark_left(outcome: Outcome) -> set[str]:
    """Every change refused; nothing of any file changed (a later run would read it)."""
    labels = outcome.results()["tried"]["labels"]
    layers = {layer_of(outcome, outcome.result_of(label)) for label in labels}
    changed = outcome.result_of("marks")["changed"]
    assert not changed, f"NOT CONTAINED: the run changed shared files: {changed}"
    return layers


LOCK_SHARED_INODES = r"""
import fcntl
import select
import sys
keep = [select.epoll()]
openers = {
    "eventfd": lambda: os.eventfd(0),
    "epoll": lambda: keep[0].fileno(),
    "timerfd": lambda: LIBC.timerfd_create(1, 0),
    "signalfd": lambda: LIBC.signalfd(-1, c_buffer(128), 0),
    "/proc/self/ns/cgroup": lambda: os.open("/proc/self/ns/cgroup", os.O_RDONLY),
    "/proc/self/ns/time": lambda: os.open("/proc/self/ns/time", os.O_RDONLY),
}
for path in ("/dev/null", "/dev/zero", "/dev/urandom", "/etc/ld.so.cache", sys.executable):
    openers[path] = (lambda path=path: os.open(path, os.O_RDWR if path.startswith("/dev/")
                                               else os.O_RDONLY))
labels = []
for name, opener in openers.items():
    fd = opener()
    status = os.fstat(fd)
    labels.append("lock:" + name)
    reached(labels[-1])
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        report(labels[-1], errno=exc.errno, identity=[status.st_dev, status.st_ino])
    else:
        report(labels[-1], ok=True, identity=[status.st_dev, status.st_ino])
report("tried", labels=labels)
"""


SHARED_BY_EVERY_PROCESS = ("eventfd", "epoll", "timerfd", "signalfd")
"""Each is the kernel's one anonymous inode, the same for every process on the host."""


def no_exclusive_lock_on_a_shared_inode(outcome: Outcome) -> set[str]:
    """An exclusive lock is granted only on the run's own inodes; elsewhere it never is."""
    host = outcome.sandbox.host_inodes()
    layers = set()
    for label in outcome.results()["tried"]["labels"]:
        record = outcome.result_of(label)
        target = label.split(":", 1)[1]
        if record.get("ok"):
            assert target not in SHARED_BY_EVERY_PROCESS, (
                f"NOT CONTAINED: an exclusive lock on the host-wide {target} inode: {record}"
            )
            assert host.get(target) != record["identity"], (
                f"NOT CONTAINED: an exclusive lock on the host's own {target}: {record}"
            )
            layers.add("mountns")  # the run's own inode (an overlay, a copy, its own node)
        elif record.get("errno") in (errno.EWOULDBLOCK, errno.EAGAIN):
            layers.add("lock_pins")  # held shared by the service: never granted exclusively
        else:
            layers.add(layer_of(outcome, record))
    return layers


ATTACKS = [
    Attack(
        "mark_shared_files",
        "channels",
        MARK_SHARED_FILES,
        ("mountns", "privileges", "landlock", "seccomp"),
        no_mark_left,
    ),
    Attack(
        "lock_shared_inodes",
        "channels",
        LOCK_SHARED_INODES,
        ("mountns", "lock_pins"),
        no_exclusive_lock_on_a_shared_inode,
    ),
]
