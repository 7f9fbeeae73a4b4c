"""Information theft: the service's keys, policy, state, source, environment, host files."""

from __future__ import annotations

import errno

from tests.escape.harness import (
    Attack,
    Check,
    Outcome,
    all_blocked,
    blocked,
    blocked_each,
    layer_of,
)

FILE_LAYERS = ("mountns", "landlock")

READ_PRIVATE_KEY = r"""
attempt("read_key", lambda: open("@KEYS_DIR@/sandbox.key").read(), path="@KEYS_DIR@/sandbox.key")
"""

LIST_KEYS_DIR = r"""
attempt("list_keys", lambda: os.listdir("@KEYS_DIR@"), path="@KEYS_DIR@")
"""

READ_KEY_VIA_SYMLINK = r"""
os.symlink("@KEYS_DIR@/operator.key", "stolen.key")
attempt("read_key_symlink", lambda: open("stolen.key").read(), path="@KEYS_DIR@/operator.key")
"""

READ_KEY_VIA_HARDLINK = r"""
def steal():
    os.link("@KEYS_DIR@/operator.key", "stolen.key")
    return open("stolen.key").read()

attempt("read_key_hardlink", steal, path="@KEYS_DIR@/operator.key")
"""

READ_POLICY = r"""
attempt("read_policy", lambda: open("@POLICY@").read(), path="@POLICY@")
"""

READ_STATE = r"""
labels = ["list_state_dir"]
attempt("list_state_dir", lambda: os.listdir("@STATE_DIR@"), path="@STATE_DIR@")
for index, path in enumerate(json.loads('@STATE_FILES@')):
    labels.append(f"state_file_{index}")
    attempt(labels[-1], lambda: open(path, "rb").read(64), path=path)
report("tried", labels=labels)
"""

READ_REPO_SOURCE = r"""
source = "@REPO@/pagi/auth/keys.py"
attempt("read_source", lambda: open(source).read(), path=source)
"""

LIST_VENV = r"""
attempt("list_venv", lambda: os.listdir("@VENV_SITE@"), path="@VENV_SITE@")
"""

READ_HOST_SECRET = r"""
attempt("host_secret", lambda: open("@HOST_SECRET@").read(), path="@HOST_SECRET@")
"""

READ_HOST_SECRET_DOTDOT = r"""
attempt("host_secret_dotdot",
        lambda: open("../../../../../../../../../..@HOST_SECRET@").read(), path="@HOST_SECRET@")
"""

READ_HOST_SECRET_PROC_ROOT = r"""
attempt("host_secret_proc_root", lambda: open("/proc/1/root@HOST_SECRET@").read(),
        path="@HOST_SECRET@")
"""

READ_SHADOW = r"""
attempt("etc_shadow", lambda: open("/etc/shadow").read(), path="/etc/shadow")
"""

LIST_ROOT_HOME = r"""
attempt("root_home", lambda: os.listdir("/root"), path="/root")
"""

SECRET_WORDS = r"""
SECRET_WORDS = ["PAGI_", "RUST_SANDBOX", "MODEL_GATEWAY", "@KEYS_DIR@", "PYTHONPATH", "LOG_LEVEL"]

def environ_check(label, path):
    reached(label)
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        report(label, errno=exc.errno)
        return
    leaked = [word for word in SECRET_WORDS if word.encode() in data]
    report(label, clean=not leaked, leaked=leaked, size=len(data))
"""

PARENT_ENVIRON = (
    SECRET_WORDS
    + r"""
environ_check("parent_environ", f"/proc/{os.getppid() or 1}/environ")
"""
)

INIT_ENVIRON = (
    SECRET_WORDS
    + r"""
environ_check("init_environ", "/proc/1/environ")
"""
)

OWN_ENVIRON = (
    SECRET_WORDS
    + r"""
reached("own_environ")
dump = "\n".join(f"{key}={value}" for key, value in os.environ.items())
leaked = [word for word in SECRET_WORDS if word in dump]
report("own_environ", clean=not leaked, leaked=leaked, keys=sorted(os.environ))
"""
)


def environment_clean(label: str) -> Check:
    """Check: the environment read was either refused or free of the service's secrets."""

    def check(outcome: Outcome) -> str:
        record = outcome.result_of(label)
        if "clean" in record:
            assert record["clean"], f"NOT CONTAINED: {label} leaked {record['leaked']}"
            return "env"
        return layer_of(outcome, record)

    return check


HOST_SERVICE_PROC = r"""
labels = []
for entry in ("environ", "cmdline", "status", "mem", "root/"):
    labels.append("service_" + entry.strip("/"))
    attempt(labels[-1], lambda: os.listdir(f"/proc/@SERVICE_PID@/{entry}") if entry.endswith("/")
            else open(f"/proc/@SERVICE_PID@/{entry}", "rb").read(64))
report("tried", labels=labels)
"""

SIGNAL_HOST_SERVICE = r"""
attempt("signal_service", lambda: os.kill(@SERVICE_PID@, 0), syscall="kill")
"""

PROC_SCAN = r"""
reached("proc_scan")
seen = {}
try:
    entries = os.listdir("/proc")
except OSError as exc:
    report("proc_scan", errno=exc.errno)
    raise SystemExit(0)
for entry in entries:
    if entry.isdigit():
        try:
            seen[entry] = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError as exc:
            seen[entry] = f"errno {exc.errno}"
foreign = [cmd for cmd in seen.values()
           if any(word in cmd for word in ("uvicorn", "-m sandbox", "pytest", "systemd", "sshd"))]
report("proc_scan", pids=sorted(seen, key=int), foreign=foreign,
       service_visible=os.path.exists("/proc/@SERVICE_PID@"))
"""


def check_proc_scan(outcome: Outcome) -> str:
    record = outcome.result_of("proc_scan")
    if "errno" in record:
        return layer_of(outcome, record)
    assert not record["foreign"], f"NOT CONTAINED: host processes visible: {record['foreign']}"
    assert not record["service_visible"], "NOT CONTAINED: the sandbox service's pid is visible"
    limit = outcome.sandbox.limits.processes
    assert len(record["pids"]) <= limit + 1, f"too many pids visible: {record['pids']}"
    return "pidns"


FILESYSTEM_INVENTORY = r"""
# What of the host's file system is visible at all from inside the jail.
sensitive = ["/root/.ssh", "/root/.bash_history", "/root/.config", "/root/.gitconfig",
             "/root/.npmrc", "/root/.cargo", "/root/.profile", "/home", "/work", "/srv",
             "/var/lib", "/var/log", "/var/run", "/run", "/boot", "/etc/ssh", "/etc/sudoers",
             "/etc/shadow", "/etc/gshadow", "/etc/machine-id", "/sys/fs/cgroup", "/sys/kernel",
             "@KEYS_DIR@", "@STATE_DIR@", "@REPO@", "@HOST_DIR@", "@POLICY@"]
reached("filesystem_inventory")
visible = [path for path in sensitive if os.path.lexists(path)]
try:
    top = sorted(os.listdir("/"))
except OSError as exc:
    top = "errno %d" % exc.errno
report("filesystem_inventory", visible=visible, top=top)
"""


def nothing_sensitive_visible(outcome: Outcome) -> str:
    record = outcome.result_of("filesystem_inventory")
    assert not record["visible"], f"NOT CONTAINED: visible in the jail: {record['visible']}"
    return "mountns"


INHERITED_FDS = r"""
import fcntl
import stat
reached("inherited_fds")
leaks = []
for fd in range(3, 4096):
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        continue
    mode = os.fstat(fd).st_mode
    kind = ("socket" if stat.S_ISSOCK(mode) else "file" if stat.S_ISREG(mode)
            else "dir" if stat.S_ISDIR(mode) else "pipe" if stat.S_ISFIFO(mode) else "other")
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = "?"
    leaks.append([fd, kind, target])
report("inherited_fds", open_fds=leaks)
"""


def check_inherited_fds(outcome: Outcome) -> str:
    record = outcome.result_of("inherited_fds")
    assert not record["open_fds"], f"NOT CONTAINED: fds inherited by the tool: {record['open_fds']}"
    return "fds"


INTROSPECT_INTERPRETER = r"""
import gc
needles = {name: bytes.fromhex(text) for name, text in json.loads('@HOST_PATHS_HEX@').items()}


def strings_in(holder):
    try:
        if isinstance(holder, dict):
            items = [*holder.keys(), *holder.values()]
        elif isinstance(holder, (list, tuple, set, frozenset)):
            items = list(holder)
        else:
            attributes = getattr(holder, "__dict__", None)
            items = list(attributes.values()) if isinstance(attributes, dict) else []
            slots = getattr(type(holder), "__slots__", ())
            slots = (slots,) if isinstance(slots, str) else slots
            items += [getattr(holder, slot, None) for slot in slots]
    except Exception:
        return []
    return [item for item in items if isinstance(item, str)]


reached("introspect_interpreter")
gc.unfreeze()  # objects a parent froze are otherwise left out of get_objects()
holders = [sys.orig_argv, sys.argv, sys.path, *gc.get_objects()]
frame = sys._getframe()
while frame is not None:  # the code's callers, whatever ran it
    holders.append(dict(frame.f_locals))
    frame = frame.f_back
found = set()
for holder in holders:
    for text in strings_in(holder):
        data = text.encode("utf-8", "surrogateescape")
        found.update(name for name, needle in needles.items() if needle in data)
for entry in ("cmdline", "environ"):  # what the kernel shows of this process's memory
    try:
        with open("/proc/self/" + entry, "rb") as shown:
            data = shown.read()
    except OSError:
        continue
    found.update(entry + ":" + name for name, needle in needles.items() if needle in data)
report("introspect_interpreter", found=sorted(found), scanned=len(holders), orig_argv=sys.orig_argv)
"""


def nothing_of_the_host_in_the_interpreter(outcome: Outcome) -> str:
    record = outcome.result_of("introspect_interpreter")
    assert record["scanned"] > 1000, f"the scan saw almost nothing: {record}"
    assert not record["found"], (
        f"NOT CONTAINED: the tool's interpreter holds host paths: {record['found']}"
        f" (orig_argv {record['orig_argv']})"
    )
    return "interpreter"


ATTACKS = [
    Attack("read_private_key", "theft", READ_PRIVATE_KEY, FILE_LAYERS, blocked("read_key")),
    Attack("list_keys_dir", "theft", LIST_KEYS_DIR, FILE_LAYERS, blocked("list_keys")),
    Attack(
        "read_key_via_symlink",
        "theft",
        READ_KEY_VIA_SYMLINK,
        FILE_LAYERS,
        blocked("read_key_symlink"),
    ),
    Attack(
        "read_key_via_hardlink",
        "theft",
        READ_KEY_VIA_HARDLINK,
        (*FILE_LAYERS, "privileges"),
        blocked("read_key_hardlink"),
    ),
    Attack("read_policy", "theft", READ_POLICY, FILE_LAYERS, blocked("read_policy")),
    Attack("read_state_dir", "theft", READ_STATE, FILE_LAYERS, blocked_each("tried")),
    Attack("read_repo_source", "theft", READ_REPO_SOURCE, FILE_LAYERS, blocked("read_source")),
    Attack("list_venv_site_packages", "theft", LIST_VENV, FILE_LAYERS, blocked("list_venv")),
    Attack("read_host_file", "theft", READ_HOST_SECRET, FILE_LAYERS, blocked("host_secret")),
    Attack(
        "read_host_file_dotdot",
        "theft",
        READ_HOST_SECRET_DOTDOT,
        FILE_LAYERS,
        blocked("host_secret_dotdot"),
    ),
    Attack(
        "read_host_file_proc_root",
        "theft",
        READ_HOST_SECRET_PROC_ROOT,
        (*FILE_LAYERS, "pidns"),
        blocked("host_secret_proc_root"),
    ),
    Attack(
        "read_etc_shadow",
        "theft",
        READ_SHADOW,
        (*FILE_LAYERS, "privileges"),
        blocked("etc_shadow"),
    ),
    Attack("list_root_home", "theft", LIST_ROOT_HOME, FILE_LAYERS, blocked("root_home")),
    Attack(
        "parent_environ",
        "theft",
        PARENT_ENVIRON,
        ("env", *FILE_LAYERS),
        environment_clean("parent_environ"),
    ),
    Attack(
        "init_environ",
        "theft",
        INIT_ENVIRON,
        ("env", *FILE_LAYERS),
        environment_clean("init_environ"),
    ),
    Attack("own_environ", "theft", OWN_ENVIRON, ("env",), environment_clean("own_environ")),
    Attack(
        "host_service_proc_entries",
        "theft",
        HOST_SERVICE_PROC,
        ("pidns",),
        blocked_each("tried", overrides={errno.ENOENT: "pidns"}),
    ),
    Attack(
        "signal_host_service",
        "theft",
        SIGNAL_HOST_SERVICE,
        ("pidns",),
        all_blocked("signal_service"),
    ),
    Attack("proc_scan", "theft", PROC_SCAN, ("pidns", "landlock"), check_proc_scan),
    Attack("inherited_fds", "theft", INHERITED_FDS, ("fds",), check_inherited_fds),
    Attack(
        "filesystem_inventory",
        "theft",
        FILESYSTEM_INVENTORY,
        ("mountns",),
        nothing_sensitive_visible,
    ),
    Attack(
        "introspect_interpreter",
        "theft",
        INTROSPECT_INTERPRETER,
        ("interpreter",),
        nothing_of_the_host_in_the_interpreter,
    ),
]
