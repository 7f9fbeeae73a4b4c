"""Input files: every path a working dir cannot take, every size and count over the policy,
every content that is not base64, is a 4xx naming the file and the rule; good files are
decoded exactly, and what the service accepts the jail's writer can write."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagi.errors import ApiError
from sandbox.files_in import PATH_MAX_BYTES, check_input_files, normalise_path
from sandbox.jail.files import write_input_files
from sandbox.models import InputFile
from sandbox.policy import KIB, FileLimits, ToolPolicy

TOOL = ToolPolicy(
    argv=("{python}", "-I", "-S", "main.py"),
    code="file",
    code_file="main.py",
    files=FileLimits(input_files=8, input_bytes=64 * KIB, input_depth=4),
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(*entries: tuple[str, bytes]) -> list[InputFile]:
    return [InputFile(path=path, content=b64(data)) for path, data in entries]


def refusal(entries: list[InputFile], tool: ToolPolicy = TOOL) -> ApiError:
    with pytest.raises(ApiError) as caught:
        check_input_files("python", tool, entries)
    return caught.value


# --------------------------------------------------------------------------- good files


def test_good_files_are_decoded_exactly_in_order_with_their_hashes():
    csv = b"a,b\n1,2\n"
    accepted = check_input_files(
        "python", TOOL, files(("data.csv", csv), ("in/2024/jan.csv", b""), ("raw.bin", bytes(256)))
    )
    assert [(f.path, f.data) for f in accepted] == [
        ("data.csv", csv),
        ("in/2024/jan.csv", b""),
        ("raw.bin", bytes(256)),
    ]
    assert accepted[0].sha256 == hashlib.sha256(csv).hexdigest() and accepted[0].size == 8


def test_no_files_and_an_empty_list_are_nothing():
    assert check_input_files("python", TOOL, None) == ()
    assert check_input_files("python", TOOL, []) == ()


@pytest.mark.parametrize(
    ("sent", "normalised"),
    [("./data.csv", "data.csv"), ("a//b.csv", "a/b.csv"), ("a/./b.csv", "a/b.csv")],
)
def test_paths_are_normalised(sent, normalised):
    [accepted] = check_input_files("python", TOOL, files((sent, b"x")))
    assert accepted.path == normalised


def test_names_are_compared_as_the_kernel_sees_them():
    # tmpfs is case-sensitive and compares bytes: these are four different files.
    composed, decomposed = "caf\u00e9.csv", "cafe\u0301.csv"
    accepted = check_input_files(
        "python",
        TOOL,
        files(("Data.csv", b"1"), ("data.csv", b"2"), (composed, b"3"), (decomposed, b"4")),
    )
    assert len({f.path.encode() for f in accepted}) == 4


def test_the_limits_themselves_are_accepted():
    tool = TOOL.model_copy(update={"files": FileLimits(input_files=2, input_bytes=10)})
    accepted = check_input_files("python", tool, files(("a", b"12345"), ("b", b"67890")))
    assert sum(f.size for f in accepted) == 10
    deep = "a/b/c/d.csv"  # four components: the depth limit
    assert check_input_files("python", TOOL, files((deep, b"")))[0].path == deep
    longest = "/".join(["x" * 63] * 3 + ["y" * 59 + ".csv"])
    assert len(longest.encode()) == PATH_MAX_BYTES
    assert check_input_files("python", TOOL, files((longest, b"")))


# --------------------------------------------------------------------------- hostile paths


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/etc/passwd", "absolute"),
        ("//etc/passwd", "absolute"),
        ("../escape.csv", "dotdot"),
        ("a/../../escape.csv", "dotdot"),
        ("a/..", "dotdot"),
        ("..", "dotdot"),
        ("", "empty"),
        (".", "empty"),
        ("./.", "empty"),
        ("a/", "directory"),
        ("./", "directory"),
        ("a\x00b", "nul"),
        ("a\nb.csv", "control_character"),
        ("tab\t.csv", "control_character"),
        ("del\x7f.csv", "control_character"),
        ("\ud800.csv", "not_unicode"),
        ("x" * 256, "name_length"),
        ("\u00e9" * 128, "name_length"),  # 256 bytes in UTF-8
        ("/".join(["y" * 200] * 2), "path_length"),
        ("a/b/c/d/e.csv", "depth"),
        ("out/plot.png", "reserved"),
        ("./out/x", "reserved"),
        ("out", "reserved"),
        ("main.py", "reserved"),
        ("main.py/x", "reserved"),
    ],
)
def test_hostile_paths_are_400_naming_file_and_rule(path, rule):
    error = refusal([InputFile(path=path, content="")])
    assert (error.status_code, error.error) == (400, "invalid_file_path")
    assert error.extra["rule"] == rule and error.extra["index"] == 0
    assert "files[0]" in error.detail
    # The echo of the name is always safe to encode as JSON.
    error.extra["file"].encode("utf-8")


@pytest.mark.parametrize(
    "pair",
    [("a.csv", "./a.csv"), ("a/b", "a//b"), ("x", "x"), ("d/e", "./d/./e")],
)
def test_duplicates_also_after_normalisation(pair):
    error = refusal(files((pair[0], b"1"), (pair[1], b"2")))
    assert error.extra["rule"] == "duplicate" and error.extra["index"] == 1
    assert "files[0]" in error.detail


@pytest.mark.parametrize("order", [("a", "a/b"), ("a/b", "a"), ("x/y", "x/y/z/w")])
def test_a_path_cannot_be_both_a_file_and_a_directory(order):
    error = refusal(files((order[0], b""), (order[1], b"")))
    assert error.extra["rule"] == "file_and_directory"


def test_a_long_hostile_name_is_echoed_short():
    error = refusal([InputFile(path="../" + "x" * 5000, content="")])
    assert len(error.extra["file"]) < 300


# --------------------------------------------------------------------------- counts and sizes


def test_too_many_files_is_413_with_the_limit():
    error = refusal(files(*[(f"f{i}", b"") for i in range(9)]))
    assert (error.status_code, error.error) == (413, "too_many_files")
    assert error.extra["max_files"] == 8


def test_oversized_files_are_413_with_the_limit():
    error = refusal(files(("a", bytes(40 * KIB)), ("b", bytes(30 * KIB))))
    assert (error.status_code, error.error) == (413, "files_too_large")
    assert error.extra["max_bytes"] == 64 * KIB
    one = refusal(files(("big", bytes(64 * KIB + 1))))
    assert one.error == "files_too_large"


def test_oversized_content_is_refused_before_it_is_decoded():
    # Not even valid base64: the size alone refuses it, no decoding work is done.
    error = refusal([InputFile(path="a", content="!" * (200 * KIB))])
    assert error.error == "files_too_large"


def test_a_tool_that_takes_no_files():
    tool = TOOL.model_copy(update={"files": FileLimits(input_files=0)})
    error = refusal(files(("a", b"")), tool)
    assert (error.status_code, error.error) == (400, "files_not_accepted")
    assert check_input_files("python", tool, []) == ()


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize(
    "content",
    [
        "abc",
        "YQ",
        "YQ=",
        "ab!d",
        "YQ==\n",
        "YQ== ",
        " YQ==",
        "YQ==YQ==",
        "=YQ=",
        "\u00e9\u00e9\u00e9\u00e9",
        "YW Jj",
    ],
)
def test_invalid_base64_is_400_naming_the_file(content):
    error = refusal(
        [InputFile(path="ok.csv", content="YQ=="), InputFile(path="bad", content=content)]
    )
    assert (error.status_code, error.error) == (400, "invalid_file_content")
    assert error.extra == {"file": "bad", "index": 1, "rule": "base64"}


# --------------------------------------------------------------------------- with the writer

_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1), max_size=12)
_paths = st.lists(
    st.one_of(_names, st.sampled_from(["", ".", "..", "out", "main.py"])), min_size=1, max_size=6
).map("/".join)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(st.tuples(_paths, st.binary(max_size=64)), max_size=6))
def test_what_the_service_accepts_the_writer_writes_exactly_and_nowhere_else(tmp_path, entries):
    box = tmp_path / f"run-{os.urandom(6).hex()}"
    workdir = box / "workdir"
    workdir.mkdir(parents=True)
    try:
        accepted = check_input_files("python", TOOL, files(*entries))
    except ApiError as error:
        assert 400 <= error.status_code < 500
        return
    write_input_files(str(workdir), {f.path: f.data for f in accepted})
    written = {
        str(path.relative_to(workdir)): path.read_bytes()
        for path in workdir.rglob("*")
        if path.is_file()
    }
    assert written == {f.path: f.data for f in accepted}
    assert [p.name for p in box.iterdir()] == ["workdir"]  # nothing beside it
    for f in accepted:
        assert not Path(f.path).is_absolute() and ".." not in Path(f.path).parts
        assert normalise_path(f.path, 4, ("main.py",)) == f.path  # already normal
