"""A request's input files: checked before anything runs, decoded for the jail.

Every refusal is a 4xx naming the file (as sent, and its index) and the rule
it broke, before a run slot is taken:

- 400 ``files_not_accepted``: the tool's policy takes no files (``input_files = 0``);
- 413 ``too_many_files`` / ``files_too_large``: over the tool's ``input_files`` or
  ``input_bytes`` (decoded size, all files together);
- 400 ``invalid_file_path``: a path the working dir cannot take (``rule`` says which);
- 400 ``invalid_file_content``: content that is not strict base64.

Paths are compared as the kernel will see them: normalised (``./a`` and
``a//b`` are ``a`` and ``a/b``), then as UTF-8 bytes, so ``Data.csv`` and
``data.csv`` are two files, and so are the composed and decomposed
spellings of ``é``.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from pagi.errors import ApiError
from sandbox.files_out import OUTPUT_DIR
from sandbox.models import InputFile
from sandbox.policy import FileLimits, ToolPolicy

NAME_MAX_BYTES = 255
"""The longest name of one path component tmpfs (the working dir) accepts."""
PATH_MAX_BYTES = 255
"""The longest input path, all components together (the runner's limit on a file name)."""
ENTRY_OVERHEAD_BYTES = 8 * 1024
"""What one file may add to a request body besides its base64 content (its path, JSON escaped)."""
_ECHO_CHARS = 200


def request_bytes(limits: FileLimits) -> int:
    """The most a request's ``files`` may take in the JSON body under ``limits``."""
    return -(-limits.input_bytes // 3) * 4 + limits.input_files * ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True)
class AcceptedFile:
    """An input file that passed every rule: what the jail writes."""

    path: str
    """Normalised: components joined by ``/``, no ``.``, no empty component."""
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        """Bytes of the decoded content."""
        return len(self.data)


class PathRefused(ValueError):
    """A path breaks ``rule``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _echo(path: str) -> str:
    """The path as sent, safe in a JSON error (no lone surrogates) and short."""
    shown = path if len(path) <= _ECHO_CHARS else path[:_ECHO_CHARS] + "..."
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def normalise_path(raw: str, max_depth: int, reserved: Sequence[str] = ()) -> str:
    """``raw`` as a path under the working dir, or :class:`PathRefused`.

    ``reserved`` names first components an input file may not use (the
    tool's code file, ``out``).
    """
    if raw == "":
        raise PathRefused("empty", "the path is empty")
    if "\x00" in raw:
        raise PathRefused("nul", "the path contains a NUL character")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        raise PathRefused("control_character", "the path contains a control character")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise PathRefused("not_unicode", "the path is not valid Unicode") from None
    if raw.startswith("/"):
        raise PathRefused("absolute", "the path must be relative to the working dir")
    parts = raw.split("/")
    if ".." in parts:
        raise PathRefused("dotdot", "'..' is not allowed in a path")
    if raw.endswith("/"):
        raise PathRefused("directory", "the path ends with '/': it names a directory")
    kept = [part for part in parts if part not in ("", ".")]
    if not kept:
        raise PathRefused("empty", "the path names the working dir itself")
    for part in kept:
        if len(part.encode("utf-8")) > NAME_MAX_BYTES:
            raise PathRefused(
                "name_length", f"a path component is longer than {NAME_MAX_BYTES} bytes"
            )
    path = "/".join(kept)
    if len(path.encode("utf-8")) > PATH_MAX_BYTES:
        raise PathRefused("path_length", f"the path is longer than {PATH_MAX_BYTES} bytes")
    if len(kept) > max_depth:
        raise PathRefused(
            "depth", f"the path has {len(kept)} components; this tool takes at most {max_depth}"
        )
    if kept[0] == OUTPUT_DIR:
        raise PathRefused("reserved", f"{OUTPUT_DIR}/ is where the tool's own output files go")
    if kept[0] in reserved:
        raise PathRefused("reserved", f"{kept[0]!r} is the tool's code file")
    return path


def _refuse_path(index: int, raw: str, rule: str, message: str) -> ApiError:
    return ApiError(
        400,
        "invalid_file_path",
        f"files[{index}] {_echo(raw)!r}: {message}",
        file=_echo(raw),
        index=index,
        rule=rule,
    )


def _check_paths(files: Sequence[InputFile], max_depth: int, reserved: Sequence[str]) -> list[str]:
    """The normalised path of each file; 400 at the first that breaks a rule."""
    paths: list[str] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(files):
        try:
            path = normalise_path(entry.path, max_depth, reserved)
        except PathRefused as refused:
            raise _refuse_path(index, entry.path, refused.rule, str(refused)) from None
        if path in seen:
            raise _refuse_path(
                index, entry.path, "duplicate", f"the same file as files[{seen[path]}] ({path!r})"
            )
        seen[path] = index
        paths.append(path)
    directories: set[str] = set()
    for path in paths:
        parts = path.split("/")
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    for index, path in enumerate(paths):
        if path in directories:
            raise _refuse_path(
                index,
                files[index].path,
                "file_and_directory",
                f"{path!r} is a file, and the directory of another file",
            )
    return paths


def _decode(index: int, raw_path: str, content: str) -> bytes:
    try:
        return binascii.a2b_base64(content.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ApiError(
            400,
            "invalid_file_content",
            f"files[{index}] {_echo(raw_path)!r}: content is not base64"
            " (RFC 4648 alphabet, padded, no line breaks)",
            file=_echo(raw_path),
            index=index,
            rule="base64",
        ) from None


def check_input_files(
    tool_name: str, tool: ToolPolicy, files: Sequence[InputFile] | None
) -> tuple[AcceptedFile, ...]:
    """The request's input files for ``tool``, checked and decoded; an ApiError (4xx) if not."""
    if not files:
        return ()
    limits = tool.files
    if limits.input_files == 0:
        raise ApiError(
            400, "files_not_accepted", f"tool {tool_name!r} takes no input files", tool=tool_name
        )
    if len(files) > limits.input_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} input files; tool {tool_name!r} takes at most {limits.input_files}",
            tool=tool_name,
            max_files=limits.input_files,
        )
    reserved = (tool.code_file,) if tool.code_file is not None else ()
    paths = _check_paths(files, limits.input_depth, reserved)

    def too_large(total: int) -> ApiError:
        return ApiError(
            413,
            "files_too_large",
            f"input files of {total} bytes or more; tool {tool_name!r} takes at most"
            f" {limits.input_bytes} bytes in all",
            tool=tool_name,
            max_bytes=limits.input_bytes,
        )

    # The least the contents can decode to: refused before any is decoded.
    least = sum(max(0, len(entry.content) // 4 * 3 - 2) for entry in files)
    if least > limits.input_bytes:
        raise too_large(least)
    accepted = []
    total = 0
    for index, (entry, path) in enumerate(zip(files, paths, strict=True)):
        data = _decode(index, entry.path, entry.content)
        total += len(data)
        if total > limits.input_bytes:
            raise too_large(total)
        accepted.append(AcceptedFile(path, data, hashlib.sha256(data).hexdigest()))
    return tuple(accepted)
