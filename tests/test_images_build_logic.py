"""Building, ensuring and showing progress, against a fake podman image API."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from engine_fakes import NullEngine

from vkrama import __version__, config, images
from vkrama.cli.progress import BuildDisplay, render_line
from vkrama.engine import images as engine_images
from vkrama.engine.images import BuildOutput, ImageInfo
from vkrama.engine.records import Completed
from vkrama.engine.spec import ContainerSpec
from vkrama.errors import ExitStatus, VkramaError
from vkrama.images import building, recipes
from vkrama.progress import NULL, BuildProgress, Event, Reporter

PROVENANCE = {"backend": "cpu", "llama_cpp_build": "11669", "ggml_version": "0.27.0-1"}


@dataclass
class FakeImages:
    """podman's image store as `vkrama.engine.images` sees it."""

    present: dict[str, ImageInfo] = field(default_factory=dict)
    # (step, total, line) as the engine reports them: it reads the steps from buildah's lines.
    output: list[tuple[int, int, str]] = field(
        default_factory=lambda: [
            (1, 2, "STEP 1/2: FROM x"),
            (1, 2, "hello"),
            (2, 2, "STEP 2/2: RUN y"),
        ]
    )
    fail_with: str | None = None
    builds: list[dict[str, Any]] = field(default_factory=list)

    def inspect(self, engine: object, reference: str) -> ImageInfo | None:
        return self.present.get(reference)

    def build(self, engine: object, context: object, containerfile: str, *,
              tags: tuple[str, ...] = (), build_args: dict[str, str] | None = None,
              labels: dict[str, str] | None = None, no_cache: bool = False,
              on_progress: Reporter = NULL, what: str = "") -> str:  # fmt: skip
        self.builds.append({"containerfile": containerfile, "tags": tuple(tags),
                            "build_args": build_args, "labels": labels})  # fmt: skip
        if len(self.builds) == 1:
            for step, total, line in self.output:
                on_progress(BuildProgress(what, step, total, line))
            if self.fail_with:
                raise VkramaError(f"build failed: {self.fail_with}", status=ExitStatus.BUILD_FAILED)
            return "a" * 64
        final = ImageInfo("f" * 64, tuple(tags), 1000, None, _labels_of(context))
        for tag in tags:
            self.present[tag] = final
        return final.id

    def read_file(self, engine: object, image: str, path: str) -> bytes:
        return json.dumps(PROVENANCE).encode()


def _labels_of(context: object) -> dict[str, str]:
    """The labels a generated `FROM id / LABEL "k"="v" …` context adds."""
    assert isinstance(context, bytes)
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        handle = tar.extractfile("Containerfile")
        assert handle is not None
        text = handle.read().decode()
    return dict(re.findall(r'"([^"]+)"="([^"]*)"', text))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeImages:
    store = FakeImages()
    store.present["docker.io/library/debian:sid"] = ImageInfo("b" * 64, (), 1, None, {})
    for name in ("inspect", "build", "read_file"):
        monkeypatch.setattr(engine_images, name, getattr(store, name))
    monkeypatch.setattr(recipes, "registry_reachable", lambda registry: False)
    # The source tarball the recipes compile the RPC module from is not fetched here
    # (tests/test_rocm_llama_source.py stages one from a loopback server).
    monkeypatch.setattr(building, "stage", lambda build_plan, on_progress=NULL: None)
    return store


class ProbedEngine(NullEngine):
    """An engine whose one container is the build's switch probe: its libraries hold
    `names` (what grep would print, one a line); any other container fails the test."""

    def __init__(self, names: str = "GGML_VK_DISABLE_F16\nGGML_VK_FORCE_MMVQ\n") -> None:
        self.names = names
        self.probed: list[str] = []

    def complete(self, spec: ContainerSpec) -> Completed:
        if not (spec.name or "").startswith("vkrama-switches-"):
            return super().complete(spec)
        self.probed.append(spec.image)
        return Completed(0, self.names, "")


def _settings(**env: str) -> config.Settings:
    return config.load({f"VKRAMA_{k.upper()}": v for k, v in env.items()}, files=[])


def test_build_reports_steps_and_labels_the_image_with_its_provenance(fake: FakeImages) -> None:
    seen: list[Event] = []
    engine = ProbedEngine()
    image = images.build(engine, images.plan("cpu", _settings()), seen.append)
    events = [e for e in seen if isinstance(e, BuildProgress)]
    assert events == seen
    assert [(e.step, e.total, e.line) for e in events[:3]] == [
        (1, 2, "STEP 1/2: FROM x"),
        (1, 2, "hello"),
        (2, 2, "STEP 2/2: RUN y"),
    ]
    assert events[-2].line.startswith("provenance: backend=cpu, llama_cpp_build=11669")
    assert events[-1].line == "environment switches its libraries read: 2"
    first, second = fake.builds
    assert first["tags"] == () and not first["labels"]  # cached layers stay valid
    assert second["tags"] == (f"localhost/vkrama/cpu:{__version__}", "localhost/vkrama/cpu:latest")
    assert image.ref == "localhost/vkrama/cpu:latest"
    assert image.provenance["llama_cpp_build"] == "11669"
    assert image.provenance["vkrama_version"] == __version__
    assert len(image.provenance["containerfile_sha256"]) == 64
    # The switch names the probe found in the built (unlabelled) image, as one label.
    assert engine.probed == ["a" * 64]  # the first build's image, before its labels
    labels = fake.present["localhost/vkrama/cpu:latest"].labels
    assert labels["vkrama.image.env_switches"] == "GGML_VK_DISABLE_F16,GGML_VK_FORCE_MMVQ"


def test_failed_build_says_at_which_step(fake: FakeImages) -> None:
    fake.fail_with = 'error building at STEP "RUN y": exit status 100'
    with pytest.raises(VkramaError) as caught:
        images.build(NullEngine(), images.plan("cpu", _settings()))
    assert caught.value.status == ExitStatus.BUILD_FAILED
    assert caught.value.message == (
        'building cpu failed at step 2/2: error building at STEP "RUN y": exit status 100'
    )


def test_oneapi_is_built_from_a_staged_context_with_its_pinned_wheels() -> None:
    planned = images.plan("oneapi", _settings())
    assert planned.staged is not None
    assert [w.name for w in planned.staged.wheels][:2] == ["cyllama-sycl", "intel-sycl-rt"]
    assert planned.context == planned.staged.directory  # what the dry run prints


def test_missing_local_only_base_fails_before_building(fake: FakeImages) -> None:
    planned = images.plan("cpu", _settings(), base="localhost/nosuch:1")
    with pytest.raises(VkramaError, match="base image localhost/nosuch:1 is not in local storage"):
        images.build(NullEngine(), planned)
    assert fake.builds == []


@pytest.mark.parametrize(
    ("backend", "env", "base", "args", "expected"),
    [
        pytest.param("cpu", {}, None, {},
                     {"BASE": "docker.io/library/debian:sid", "LLAMA_CPP_BUILD": "11434"},
                     id="debian-recipe-gets-the-configured-base"),
        pytest.param("vulkan", {"images_base": "localhost/deb:sid", "images_apt_options": "-q"},
                     None, {}, {"BASE": "localhost/deb:sid", "APT_OPTIONS": "-q",
                                "LLAMA_CPP_BUILD": "11434"},
                     id="settings-base-and-apt-options-are-build-args"),
        pytest.param("oneapi", {"images_base": "localhost/deb:sid"}, None, {},
                     {"BASE": "localhost/deb:sid", "LLAMA_CPP_BUILD": "11434"},
                     id="oneapi-follows-the-configured-base"),
        pytest.param("cpu", {}, "localhost/x:1", {"K": "V", "LLAMA_CPP_BUILD": "1"},
                     {"BASE": "localhost/x:1", "K": "V", "LLAMA_CPP_BUILD": "1"},
                     id="base-flag-and-build-args-win"),
    ],
)  # fmt: skip
def test_plan_build_args(
    backend: str,
    env: dict[str, str],
    base: str | None,
    args: dict[str, str],
    expected: dict[str, str],
) -> None:
    planned = images.plan(backend, _settings(**env), build_args=args, base=base)
    assert planned.build_args == expected
    assert planned.podman_argv()[:6] == [
        *("podman", "build", "--format", "docker", "-f"),
        str(planned.context / planned.recipe.path.name),
    ]


@pytest.mark.parametrize("backend", ["cpu", "vulkan", "rocm", "cuda", "oneapi"])
def test_debian_recipes_get_the_llama_cpp_source_their_rpc_stage_compiles(backend: str) -> None:
    """Every Debian recipe COPYs the source tarball into its shared `rpc` stage, so the plan
    stages it (under VKRAMA_HOME) with the recipe and its scripts, as rocm7's does."""
    settings = _settings()
    planned = images.plan(backend, settings)
    assert planned.recipe.copies("llama-cpp-source.tar.gz")
    assert planned.staged is not None and planned.staged.source is not None
    assert planned.staged.source.build == "11434"
    assert planned.context == settings.home / "cache" / "build" / backend
    assert "FROM ${BASE} AS rpc" in planned.recipe.text


def test_oneapis_rpc_stage_is_the_debian_recipes_own_text() -> None:
    """One text, so podman builds the stage once for every image; the oneapi context stages
    the source tarball beside its wheels."""

    def stage(backend: str) -> str:
        text = images.plan(backend, _settings()).recipe.text
        return text[text.index("FROM ${BASE} AS rpc") :].split("\nFROM ")[0]

    assert stage("oneapi") == stage("cpu") == stage("vulkan")
    planned = images.plan("oneapi", _settings())
    assert planned.staged is not None and planned.staged.wheels
    assert "COPY --from=rpc /opt/vkrama-rpc /opt/vkrama-rpc" in planned.recipe.text


def test_plan_refuses_offline() -> None:
    with pytest.raises(VkramaError) as caught:
        images.plan("cpu", _settings(offline="1"))
    assert caught.value.status == ExitStatus.OFFLINE


def test_ensure_reuses_a_built_image(fake: FakeImages) -> None:
    fake.present["localhost/vkrama/cpu:latest"] = ImageInfo(
        "c" * 64, (), 5, None, {"vkrama.image.llama_cpp_build": "11669"}
    )
    image = images.ensure(NullEngine(), "cpu", _settings())
    assert image.id == "c" * 64 and image.provenance == {"llama_cpp_build": "11669"}
    assert fake.builds == []


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"offline": "1"}, id="offline-forbids-building"),
        pytest.param({"images_pull": "never"}, id="pull-never-forbids-building"),
    ],
)
def test_ensure_does_not_build_when_forbidden(fake: FakeImages, env: dict[str, str]) -> None:
    with pytest.raises(VkramaError) as caught:
        images.ensure(NullEngine(), "vulkan", _settings(**env))
    assert caught.value.status == ExitStatus.IMAGE_UNAVAILABLE
    assert "vkrama images build vulkan" in (caught.value.hint or "")
    assert fake.builds == []


def test_ensure_builds_on_first_use(fake: FakeImages) -> None:
    events: list[Event] = []
    image = images.ensure(ProbedEngine(), "cpu", _settings(), events.append)
    assert image.ref == "localhost/vkrama/cpu:latest" and len(fake.builds) == 2
    assert isinstance(events[0], BuildProgress) and events[0].step == 1


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        pytest.param(["STEP 1/3: FROM x\n"], ["STEP 1/3: FROM x"], id="one-line-per-chunk"),
        pytest.param(["Reading package", " lists...", "\n"], ["Reading package lists..."],
                     id="line-split-across-chunks"),
        pytest.param(["a\r\nb\r\n"], ["a", "b"], id="crlf-from-dpkg"),
        pytest.param(["(Reading database ... 5%\r(Reading database ... 100%\n"],
                     ["(Reading database ... 100%"], id="carriage-return-redraws-keep-the-last"),
        pytest.param(["\n\n", "tail without newline"], ["tail without newline"],
                     id="blank-lines-dropped-and-tail-flushed"),
    ],
)  # fmt: skip
def test_build_output_lines(chunks: list[str], lines: list[str]) -> None:
    output = BuildOutput()
    got = [line for chunk in chunks for line in output.feed(chunk)] + output.flush()
    assert got == lines


@pytest.mark.parametrize(
    ("progress", "width", "expected"),
    [
        pytest.param(BuildProgress("vulkan", 6, 11, "STEP 6/11: RUN apt-get update"), 80,
                     "[vulkan] step 6/11  RUN apt-get update", id="step-line-shows-instruction"),
        pytest.param(BuildProgress("cpu", 0, 0, "Trying to pull"), 80, "[cpu]  Trying to pull",
                     id="before-the-first-step"),
        pytest.param(BuildProgress("cpu", 2, 9, "Unpacking   libggml0  ..."), 24,
                     "[cpu] step 2/9  Unpack…", id="cut-to-the-terminal-width"),
    ],
)  # fmt: skip
def test_render_line(progress: BuildProgress, width: int, expected: str) -> None:
    assert render_line(progress, width) == expected


def test_plain_display_prints_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    display = BuildDisplay(tty=False)
    display(BuildProgress("cpu", 1, 2, "STEP 1/2: FROM x"))
    display(BuildProgress("cpu", 1, 2, "hello"))
    display.close()
    assert capsys.readouterr().err == "[cpu] STEP 1/2: FROM x\n[cpu] hello\n"


def test_tty_display_redraws_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    display = BuildDisplay(tty=True, min_interval=0)
    display(BuildProgress("cpu", 1, 2, "STEP 1/2: FROM x"))
    display(BuildProgress("cpu", 1, 2, "hello"))
    display.close()
    err = capsys.readouterr().err
    # click drops the erase-to-end-of-line code when stderr is captured, as here.
    assert err == "\r[cpu] step 1/2  FROM x\r[cpu] step 1/2  hello\n"


class _Response:
    status_code = 200

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def raise_for_status(self) -> None:
        pass

    def iter_lines(self) -> list[bytes]:
        return [json.dumps(event).encode() for event in self.events]


class _Api:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.calls: list[dict[str, Any]] = []

    def post(self, path: str, **kwargs: Any) -> _Response:
        self.calls.append({"path": path, **kwargs})
        return _Response(self.events)


class _Engine:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.client = type("Client", (), {"api": _Api(events)})()

    def call(self, what: str, request: Callable[[], str | None], again: object = None) -> object:
        return request()  # no podman to lose


def test_engine_build_streams_lines_and_returns_the_id() -> None:
    engine = _Engine([
        {"stream": "STEP 1/2: FROM x\n"},
        {"stream": "Get:1 http://deb.debian.org sid"},
        {"stream": " InRelease\n"},
        {"aux": {"ID": "sha256:" + "e" * 64}},
        {"stream": "Successfully built eeeeeeeeeeee\n"},
    ])  # fmt: skip
    seen: list[Event] = []
    image = engine_images.build(
        engine,  # type: ignore[arg-type]
        b"tar",
        "cpu.Containerfile",
        on_progress=seen.append,
        what="cpu",
    )
    assert image == "e" * 64
    assert seen == [
        BuildProgress("cpu", 1, 2, "STEP 1/2: FROM x"),
        BuildProgress("cpu", 1, 2, "Get:1 http://deb.debian.org sid InRelease"),
        BuildProgress("cpu", 1, 2, "Successfully built eeeeeeeeeeee"),
    ]
    call = engine.client.api.calls[0]
    assert call["compatible"] is True and call["stream"] is True  # cache-reusing endpoint


def test_engine_build_error_event_is_a_build_failure() -> None:
    engine = _Engine([{"stream": "STEP 2/2: RUN false\n"}, {"error": "exit status 1"}])
    with pytest.raises(VkramaError) as caught:
        engine_images.build(engine, b"tar", "cpu.Containerfile")  # type: ignore[arg-type]
    assert caught.value.status == ExitStatus.BUILD_FAILED
    assert caught.value.message == "build failed: exit status 1"
