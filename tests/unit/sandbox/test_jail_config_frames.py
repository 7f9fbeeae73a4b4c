"""The jail's config and payload survive their frames exactly, and a malformed frame is refused."""

import marshal

import pytest

from sandbox.jail.config import JailConfig, JailLimits, RunPayload


def _config() -> JailConfig:
    return JailConfig(
        env={"LANG": "C.UTF-8"},
        uid=65534,
        gid=65534,
        root_dir="run-1",
        read_paths=["/usr"],
        extra_read_paths=[],
        hidden_paths=["/usr/secret"],
        limits=JailLimits(
            wall_seconds=1.5,
            cpu_seconds=2,
            memory_bytes=1 << 28,
            file_size_bytes=1 << 20,
            open_files=64,
            processes=16,
            stack_bytes=1 << 23,
            tmp_bytes=1 << 24,
        ),
        network=False,
        egress_port=0,
        seccomp_bpf=b"\x06\x00\x00\x00\x00\x00\xff\x7f",
        seccomp_notify=True,
        landlock_abi=3,
        exec_written=False,
        hostname="sandbox",
        layers=["seccomp", "rlimits"],
    )


def test_a_config_reads_back_as_written_with_typed_limits():
    config = _config()
    read = JailConfig.from_bytes(config.to_bytes())
    assert read == config
    assert isinstance(read.limits, JailLimits) and read.limits.wall_seconds == 1.5


def test_a_payload_reads_back_as_written():
    payload = RunPayload(argv=["/bin/true"], files={"a.txt": b"x"}, python=None)
    assert RunPayload.from_bytes(payload.to_bytes()) == payload


@pytest.mark.parametrize(
    "frame",
    [
        marshal.dumps([1, 2]),
        marshal.dumps({"env": {}}),
        marshal.dumps({**marshal.loads(_config().to_bytes()), "limits": {"wall_seconds": 1.0}}),
        marshal.dumps({**marshal.loads(_config().to_bytes()), "limits": 5}),
    ],
)
def test_a_malformed_config_frame_is_refused(frame):
    with pytest.raises((ValueError, KeyError, TypeError)):
        JailConfig.from_bytes(frame)
