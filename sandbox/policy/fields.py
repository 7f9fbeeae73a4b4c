"""The value types of policy keys: sizes with units, names, paths, arrays.

Every table of the policy derives from :class:`PolicyModel`: unknown keys and
loose types are errors, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from sandbox.jail.layer import LAYERS
from sandbox.spec import GIB, KIB, MIB

LayerName = Literal[LAYERS]  # type: ignore[valid-type]
CodeMode = Literal["none", "stdin", "file", "argv"]
Executor = Literal["cold", "warm"]

_SIZE = re.compile(r"^\s*(\d{1,15})\s*(B|K|KB|KiB|M|MB|MiB|G|GB|GiB)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "K": KIB,
    "KB": KIB,
    "KiB": KIB,
    "M": MIB,
    "MB": MIB,
    "MiB": MIB,
    "G": GIB,
    "GB": GIB,
    "GiB": GIB,
}


def _parse_size(value: object) -> object:
    """``"64 KiB"`` -> 65536; integers pass through (bytes); anything else is left to fail."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError("a size is an integer of bytes or a string like '64 KiB' or '256MiB'")
        return int(match.group(1)) * _UNITS[match.group(2)]
    return value


def _list_to_tuple(value: object) -> object:
    """TOML arrays arrive as lists; snapshots hold tuples so they cannot change."""
    return tuple(value) if isinstance(value, list) else value


def array_of(item: Any) -> Any:
    """A TOML array of ``item``, held as a tuple."""
    return Annotated[tuple[item, ...], BeforeValidator(_list_to_tuple)]


def bounded_size(floor: int, ceiling: int) -> Any:
    """A size in bytes (an integer or ``"64 KiB"``) within ``floor`` and ``ceiling``."""
    return Annotated[int, BeforeValidator(_parse_size), Field(ge=floor, le=ceiling)]


ToolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")]
ToolRef = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z][a-z0-9_\-]{0,63})$")]
Argument = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")]
SyscallName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
ModuleName = Annotated[
    str,
    StringConstraints(
        max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
    ),
]
RequirementsPath = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^/\x00][^\x00]*\.txt$")
]
AbsolutePath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$")
]


class PolicyModel(BaseModel):
    """Base of every policy table: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
