"""Raw Linux syscalls for the jail, over the `_ctypes` C module.

The public `ctypes` package costs ~2.5 ms to import (it builds many types at
import time), paid by each launcher started per run; `_ctypes` alone costs ~0.3 ms. The jail
only needs `syscall(2)` with integer and buffer arguments, so this module
builds exactly that and nothing more. x86_64 only: syscall numbers below are
those of the native architecture, the only one the seccomp filter admits.
"""

from __future__ import annotations

import _ctypes
import os

SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_PIVOT_ROOT = 155
SYS_PRCTL = 157
SYS_MOUNT = 165
SYS_UMOUNT2 = 166
SYS_SETHOSTNAME = 170
SYS_UNSHARE = 272
SYS_SETNS = 308
SYS_SECCOMP = 317
SYS_PIDFD_GETFD = 438
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_CLOSE_RANGE = 436
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446


class CLong(_ctypes._SimpleCData):
    """C `long`: every syscall argument is passed at full register width."""

    _type_ = "l"


class _CChar(_ctypes._SimpleCData):
    _type_ = "c"


class _Libc:
    _handle = _ctypes.dlopen(None, os.RTLD_NOW)


class _SyscallFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = CLong


_syscall = _SyscallFunction(("syscall", _Libc))

Argument = int | bytes | None


def _convert(argument: Argument) -> object:
    if argument is None:
        return CLong(0)
    if isinstance(argument, int):
        return CLong(argument)
    return argument  # bytes: passed as a pointer to their (read-only) data


def syscall(number: int, *arguments: Argument) -> int:
    """Call syscall `number`; raise OSError(errno) when it fails."""
    # map, not a generator expression: no function object made per call.
    result: int = _syscall(CLong(number), *map(_convert, arguments))
    if result == -1:
        error = _ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def writable_buffer(size: int) -> tuple[object, int]:
    """A zeroed C buffer of `size` bytes and its address (for syscalls that write)."""
    buffer = (_CChar * size)()
    return buffer, _ctypes.addressof(buffer)


def buffer_bytes(buffer: object) -> bytes:
    """The current content of a buffer from :func:`writable_buffer`."""
    return bytes(memoryview(buffer).cast("B"))  # type: ignore[arg-type]


def address_of(data: bytes) -> tuple[object, int]:
    """A C copy of `data` (zero-padded) and its address, for structs that hold pointers.

    The buffer's size is rounded up to a power of two: ctypes makes a class
    per array size, so a zygote that made one before forking spares its
    children making it again.
    """
    size = 1 << max(len(data) - 1, 63).bit_length()
    buffer = (_CChar * size).from_buffer_copy(data.ljust(size, b"\0"))
    return buffer, _ctypes.addressof(buffer)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return syscall(SYS_PRCTL, option, arg2, arg3, arg4, arg5)


def u64(value: int) -> bytes:
    """A little-endian unsigned 64-bit field."""
    return value.to_bytes(8, "little")


def u32(value: int) -> bytes:
    """A little-endian unsigned 32-bit field."""
    return value.to_bytes(4, "little")


def s32(value: int) -> bytes:
    """A little-endian signed 32-bit field."""
    return value.to_bytes(4, "little", signed=True)
