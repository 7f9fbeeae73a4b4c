"""The audit record's view of a run's files: names, sizes and hashes, never content.

Two fields of the ``execute_tool`` record (see policies/README.md, Audit):

``files_in``: ``{count, bytes, files: [{path, size, sha256}]}`` for the
request's input files, null when it had none;

``files_out``: ``{count, returned, returned_bytes, unlisted, files: [{path,
size, sha256, truncated, skipped}]}`` for what the tool left under
``out/``, null when nothing was collected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandbox.files_in import AcceptedFile
from sandbox.files_out import OutputCollection


def files_in_record(files: Sequence[AcceptedFile]) -> dict[str, Any] | None:
    """The ``files_in`` field for a request's accepted input files."""
    if not files:
        return None
    return {
        "count": len(files),
        "bytes": sum(entry.size for entry in files),
        "files": [
            {"path": entry.path, "size": entry.size, "sha256": entry.sha256} for entry in files
        ],
    }


def files_out_record(collection: OutputCollection | None) -> dict[str, Any] | None:
    """The ``files_out`` field for what a run's collection found."""
    if collection is None or (not collection.files and not collection.unlisted):
        return None
    returned = [entry for entry in collection.files if entry.data is not None]
    return {
        "count": len(collection.files) + collection.unlisted,
        "returned": len(returned),
        "returned_bytes": collection.returned_bytes,
        "unlisted": collection.unlisted,
        "files": [
            {
                "path": entry.path,
                "size": entry.size,
                "sha256": entry.sha256,
                "truncated": entry.truncated,
                "skipped": entry.skipped,
            }
            for entry in collection.files
        ],
    }
