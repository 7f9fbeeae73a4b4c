"""Persistence: leave files behind outside the working dir, or tamper with host files."""

from __future__ import annotations

import errno
import json
import os
import sysconfig
import time
from pathlib import Path

from tests.escape.harness import Attack, Check, Outcome, blocked_each, layer_of, marker_files

HOST_DIRS = (Path("/tmp"), Path("/dev/shm"), Path("/var/tmp"))
STDLIB = Path(sysconfig.get_paths()["stdlib"])
"""The base interpreter's standard library, which every tool reads (and must not write)."""


def _left_on_host(outcome: Outcome) -> list[str]:
    sandbox = outcome.sandbox
    deep = [*HOST_DIRS, sandbox.state_dir, sandbox.host_files.directory, STDLIB]
    shallow = [
        Path(os.environ.get("HOME", "/root")),
        Path("/root"),
        sandbox.repo,
        Path("/etc/cron.d"),
    ]
    return marker_files(outcome.marker, deep) + marker_files(outcome.marker, shallow, deep=False)


def _nothing_left(outcome: Outcome, grace_s: float = 3.0) -> None:
    """Nothing named after the run on the host, once the service had a moment to clean up."""
    deadline = time.monotonic() + grace_s
    left = _left_on_host(outcome)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _left_on_host(outcome)
    assert not left, f"NOT CONTAINED: the run left files on the host: {left}"


def left_nothing(label: str) -> Check:
    """Check: the write was refused, or went to a private place that died with the run."""

    def check(outcome: Outcome) -> str:
        record = outcome.result_of(label)
        _nothing_left(outcome)
        if record.get("ok"):
            return "mountns"  # written into the run's private view, gone from the host
        return layer_of(outcome, record)

    return check


def write_to(label: str, path: str) -> str:
    directory = None if path.startswith("..") else os.path.dirname(path)
    return f"""
def write():
    with open("{path}", "w") as handle:
        handle.write("persisted by " + MARKER)
    return "{path}"

attempt("{label}", write, path={directory!r})
"""


WRITE_TARGETS = [
    ("write_host_tmp", "/tmp/" + "@MARKER@"),
    ("write_dev_shm", "/dev/shm/" + "@MARKER@"),
    ("write_var_tmp", "/var/tmp/" + "@MARKER@"),
    ("write_home", "/root/.@MARKER@"),
    ("write_repo", "@REPO@/@MARKER@.py"),
    ("write_state_dir", "@STATE_DIR@/@MARKER@"),
    ("write_world_writable_host_dir", "@HOST_DIR@/drop/@MARKER@"),
    # cron's dir where the host has one (a directory the host lacks proves nothing).
    ("write_etc_cron", ("/etc/cron.d" if os.path.isdir("/etc/cron.d") else "/etc") + "/@MARKER@"),
    ("write_dotdot", "../@MARKER@"),
    ("write_dotdot_twice", "../../@MARKER@"),
]

WORKDIR_REMOVED = r"""
reached("workdir_file")
with open(MARKER, "w") as handle:
    handle.write("left in the working dir")
os.mkdir(MARKER + "-dir")
report("workdir_file", ok=True, cwd=os.getcwd())
"""


def workdir_removed(outcome: Outcome) -> str:
    record = outcome.result_of("workdir_file")
    assert record.get("ok"), outcome.describe()
    _nothing_left(outcome)
    return "teardown"


UNDELETABLE_TREE = r"""
# A deep tree whose directories lose every permission: cleanup must still remove it.
def build():
    base = os.getcwd()
    for depth in range(600):
        os.mkdir("d")
        os.chdir("d")
    with open(MARKER, "w") as handle:
        handle.write("deep")
    os.mkdir(MARKER + "-locked")
    with open(os.path.join(MARKER + "-locked", "f"), "w") as handle:
        handle.write("x")
    os.chmod(MARKER + "-locked", 0)
    os.chdir(base)
    os.chmod("d", 0o500)
    return "built"

attempt("undeletable_tree", build)
"""


def tree_removed(outcome: Outcome) -> str:
    record = outcome.result_of("undeletable_tree")
    assert record.get("ok"), f"the tree was not built: {record}"
    _nothing_left(outcome)
    return "teardown"


TAMPER_STDLIB = r"""
import json as some_module
stdlib = os.path.dirname(os.__file__)
labels = []
for label, action in (
    ("stdlib_new_file", lambda: open(os.path.join(stdlib, MARKER + ".py"), "w").write("x")),
    ("stdlib_new_pyc", lambda: open(os.path.join(stdlib, "__pycache__", MARKER + ".pyc"), "wb")),
    ("stdlib_open_source_for_write",
     lambda: os.close(os.open(some_module.__file__, os.O_WRONLY))),
    ("interpreter_open_for_write", lambda: os.close(os.open(sys.executable, os.O_WRONLY))),
    ("stdlib_rename", lambda: os.rename(some_module.__file__, some_module.__file__)),
):
    labels.append(label)
    attempt(label, action)
report("tried", labels=labels)
"""


def stdlib_untouched(outcome: Outcome) -> set[str]:
    """Check: the interpreter and its library, shared with the host, stay read-only."""
    layers = blocked_each("tried", overrides={errno.ETXTBSY: "kernel"})(outcome)
    _nothing_left(outcome)
    return layers if isinstance(layers, set) else {layers}


FORGE_RECORDS = r"""
import time
forged = json.dumps({"forged": MARKER, "event": "execute_tool", "tool_status": "ok"})
reached("forge_records")
for stream in (sys.stdout, sys.stderr):
    stream.write("\n" + forged + "\n\r" + forged + "\x00\n")
    stream.flush()
report("forge_records", ok=True)
"""


def no_forged_records(outcome: Outcome) -> str:
    """Check: what a tool prints never becomes a record of its own in the audit log or logs."""
    assert outcome.result_of("forge_records").get("ok"), outcome.describe()
    time.sleep(0.3)  # the audit record is written as the run ends
    audit_lines = [
        line
        for path in outcome.sandbox.state_dir.rglob("*.jsonl")
        for line in path.read_text(errors="replace").splitlines()
    ]
    assert audit_lines, "no audit log found under the state dir"
    log_lines = list(outcome.sandbox.logs.of("sandbox"))
    for line in [*audit_lines, *log_lines]:
        if outcome.marker not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(
                f"NOT CONTAINED: a broken record carries tool output: {line!r}"
            ) from None
        assert not (isinstance(record, dict) and record.get("forged") == outcome.marker), (
            f"NOT CONTAINED: the tool forged a record: {line!r}"
        )
    return "json_encoding"


SYMLINK_WRITE = r"""
def write_through_symlink():
    os.symlink("@HOST_WRITABLE@", "link")
    with open("link", "a") as handle:
        handle.write("tampered by " + MARKER)
    return "written"

attempt("symlink_write", write_through_symlink, path="@HOST_WRITABLE@")
"""

HARDLINK_WRITE = r"""
def write_through_hardlink():
    os.link("@HOST_WRITABLE@", "hardlink")
    with open("hardlink", "a") as handle:
        handle.write("tampered by " + MARKER)
    return "written"

attempt("hardlink_write", write_through_hardlink, path="@HOST_WRITABLE@")
"""

RENAME_INTO_HOST = r"""
def rename_out():
    with open("payload", "w") as handle:
        handle.write("moved out by " + MARKER)
    os.rename("payload", "@HOST_DIR@/drop/" + MARKER)
    return "renamed"

attempt("rename_out", rename_out, path="@HOST_DIR@/drop")
"""


def host_file_intact(label: str) -> Check:
    def check(outcome: Outcome) -> str:
        record = outcome.result_of(label)
        files = outcome.sandbox.host_files
        intact = files.writable_intact()
        files.reset_writable()
        assert intact, f"NOT CONTAINED: {label} changed a host file"
        if record.get("ok"):
            return "mountns"
        return layer_of(outcome, record)

    return check


ATTACKS = [
    *(
        Attack(
            label,
            "persistence",
            write_to(label, path),
            ("mountns", "landlock"),
            left_nothing(label),
        )
        for label, path in WRITE_TARGETS
    ),
    Attack("workdir_removed", "persistence", WORKDIR_REMOVED, ("teardown",), workdir_removed),
    Attack("undeletable_tree", "persistence", UNDELETABLE_TREE, ("teardown",), tree_removed),
    Attack(
        "tamper_stdlib_and_interpreter",
        "persistence",
        TAMPER_STDLIB,
        ("mountns", "landlock"),
        stdlib_untouched,
    ),
    Attack(
        "forge_audit_records", "persistence", FORGE_RECORDS, ("json_encoding",), no_forged_records
    ),
    Attack(
        "symlink_to_host_file",
        "persistence",
        SYMLINK_WRITE,
        ("mountns", "landlock"),
        host_file_intact("symlink_write"),
    ),
    Attack(
        "hardlink_to_host_file",
        "persistence",
        HARDLINK_WRITE,
        ("mountns", "landlock", "privileges"),
        host_file_intact("hardlink_write"),
    ),
    Attack(
        "rename_into_host_dir",
        "persistence",
        RENAME_INTO_HOST,
        ("mountns", "landlock"),
        left_nothing("rename_out"),
    ),
]
