"""The engine against the real podman: labelled containers, clamped ulimits, clean removal."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from vkrama.engine import ContainerSpec, Engine
from vkrama.engine.spec import clamped_ulimits
from vkrama.errors import ExitStatus, VkramaError

BASE = "docker.io/library/debian:sid"


def test_ulimits_never_exceed_the_hosts_hard_limits() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = clamped_ulimits()
    assert limits["nofile"] <= hard or hard == resource.RLIM_INFINITY
    assert limits["nproc"] <= 4096


def test_dry_run_command_shows_the_secure_defaults() -> None:
    spec = ContainerSpec(
        image=BASE,
        command=("true",),
        env={"TOKEN": "s3cret", "A": "b"},
        secret_env=frozenset({"TOKEN"}),
    )
    line = spec.podman_command()
    assert "--cap-drop all" in line
    assert "--security-opt no-new-privileges" in line
    assert "--env TOKEN='***'" in line or "--env 'TOKEN=***'" in line
    assert "s3cret" not in line


@pytest.mark.podman
def test_a_labelled_container_runs_lists_and_goes_away(engine: Engine) -> None:
    spec = ContainerSpec(
        image=BASE,
        command=(
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; grep 'open files' /proc/self/limits; sleep 1",
        ),
        labels={"vkrama.role": "engine-test"},
    )
    container = engine.run(spec)
    try:
        listed = engine.containers({"vkrama.role": "engine-test"})
        assert [c.id for c in listed] == [container]
        assert listed[0].labels["vkrama.role"] == "engine-test"
        assert "vkrama.version" in listed[0].labels
        assert engine.wait(container, timeout=30) == 0
        out = list(engine.logs(container, stderr=False))
        err = list(engine.logs(container, stdout=False))
    finally:
        engine.remove(container)
    assert out[0] == "to-stdout"
    nofile = clamped_ulimits()["nofile"]
    assert out[1].split()[3:5] == [str(nofile), str(nofile)]
    assert err == ["to-stderr"]
    assert engine.containers({"vkrama.role": "engine-test"}) == []


@pytest.mark.podman
def test_run_to_completion_keeps_streams_apart_and_removes_the_container(engine: Engine) -> None:
    spec = ContainerSpec(
        image=BASE,
        command=("sh", "-c", "echo out; echo err >&2; exit 3"),
        labels={"vkrama.role": "engine-test"},
    )
    done = engine.run_to_completion(spec, timeout=30)
    assert (done.exit_code, done.stdout, done.stderr) == (3, "out", "err")
    assert engine.containers({"vkrama.role": "engine-test"}) == []


@pytest.mark.podman
def test_network_none_gives_the_container_only_loopback(engine: Engine) -> None:
    spec = ContainerSpec(
        image=BASE,
        command=("sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1"),
        labels={"vkrama.role": "engine-test"},
        network="none",
    )
    assert "--network none" in spec.podman_command()
    done = engine.run_to_completion(spec, timeout=30)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.split() == ["lo"]


@pytest.mark.podman
def test_a_container_that_cannot_start_is_not_left_behind(engine: Engine) -> None:
    from vkrama.errors import VkramaError

    spec = ContainerSpec(
        image=BASE, command=("/no/such/program",), labels={"vkrama.role": "engine-test"}
    )
    with pytest.raises(VkramaError):
        engine.run(spec)
    assert engine.containers({"vkrama.role": "engine-test"}) == []


@pytest.mark.podman
def test_logs_tail_counts_lines_not_podman_records(engine: Engine) -> None:
    # printf without a newline, then the rest: one line written as two records
    script = "for i in 1 2 3 4 5; do printf 'line-'; sleep 0.05; echo $i; done"
    spec = ContainerSpec(
        image=BASE, command=("sh", "-c", script), labels={"vkrama.role": "engine-test"}
    )
    container = engine.run(spec)
    try:
        engine.wait(container, timeout=30)
        assert list(engine.logs(container, tail=2)) == ["line-4", "line-5"]
        assert list(engine.logs(container, tail=0)) == []
        assert list(engine.logs(container, tail=2, follow=True)) == ["line-4", "line-5"]
    finally:
        engine.remove(container)


@pytest.mark.podman
def test_a_private_service_outlives_pauses_of_the_process_using_it(tmp_path: Path) -> None:
    from vkrama import config
    from vkrama.engine import connect

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    settings = config.load(
        environ={"XDG_RUNTIME_DIR": str(runtime), "VKRAMA_ENGINE_IDLE_TIMEOUT": "1"}, files=[]
    )
    engine = connect(settings)
    assert engine.endpoint.started and engine.endpoint.idle_timeout == 1
    import time

    time.sleep(3)  # three idle timeouts without a call of our own
    assert engine.info().version


@pytest.mark.podman
def test_wait_blocks_until_the_exit_and_times_out_with_its_own_status(engine: Engine) -> None:
    from vkrama.errors import ExitStatus, VkramaError

    spec = ContainerSpec(
        image=BASE, command=("sh", "-c", "sleep 1; exit 4"), labels={"vkrama.role": "engine-test"}
    )
    container = engine.run(spec)
    try:
        assert engine.wait(container, timeout=30) == 4
    finally:
        engine.remove(container)
    spec = ContainerSpec(
        image=BASE,
        command=("sh", "-c", "trap exit TERM; sleep 30 & wait"),
        labels={"vkrama.role": "engine-test"},
    )
    container = engine.run(spec)
    try:
        with pytest.raises(VkramaError) as caught:
            engine.wait(container, timeout=1)
        assert caught.value.status == ExitStatus.TIMEOUT
    finally:
        engine.remove(container)
    assert engine.containers({"vkrama.role": "engine-test"}) == []


def test_a_container_removed_while_inspected_counts_as_not_found() -> None:
    from podman import errors as podman_errors

    from vkrama.engine.errors import translate_errors

    gone = "container 7507 does not exist in database: no such container"
    with pytest.raises(VkramaError) as caught, translate_errors("inspect container 7507"):
        raise podman_errors.APIError("500", explanation=gone)
    assert caught.value.status == ExitStatus.NOT_FOUND
