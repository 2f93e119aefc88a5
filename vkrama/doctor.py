"""`vkrama doctor`: is this machine ready to run vkrama's containers, and if not, what to do.

Stage: doctor, a room of its own after backends (it reads the hardware profile, podman's
facts and the backends' list; it checks the host, not images). HardwareProfile + facts
about podman ─► list of `Check`s. Split in two so the judging is pure: `gather()` collects
facts (podman info, images, rlimits, containers.conf) and `diagnose()` turns facts into
checks, each problem with a fix. Never prints and never changes anything on the host.
"""

from __future__ import annotations

import grp
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.backends import BACKENDS, check
from vkrama.errors import VkramaError
from vkrama.hardware.cdi import GRAPHICS_FIX
from vkrama.hardware.power import NVML_MISSING, PowerCounters, find_counters
from vkrama.hardware.profile import HardwareProfile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from vkrama.config import Settings
    from vkrama.engine import Engine
    from vkrama.engine.records import EngineInfo

# Where podman reads containers.conf, lowest precedence first (containers.conf(5)).
CONTAINERS_CONFS = (
    Path("/usr/share/containers/containers.conf"),
    Path("/etc/containers/containers.conf"),
    Path.home() / ".config" / "containers" / "containers.conf",
)
PODMAN_DEFAULT_NOFILE = 1048576  # what podman 4 asks for when containers.conf says nothing
ULIMITS_FIX = (
    'add default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"] under [containers] in '
    "/etc/containers/containers.conf"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class Facts:
    """What `diagnose` judges; gathered from the live system by `gather`."""

    engine: EngineInfo | None = None
    engine_error: str | None = None  # why podman could not be reached
    images: dict[str, bool] = field(default_factory=dict)  # backend -> image built
    hard_limits: dict[str, int] = field(default_factory=dict)  # nofile/nproc hard rlimits
    default_ulimits: tuple[str, ...] = ()  # containers.conf [containers] default_ulimits
    cgroup_hybrid: bool = False  # cgroup v1 with a v2 "unified" tree: crun refuses it
    power: PowerCounters | None = None  # each device's energy counter, or why none


def gather(
    settings: Settings,
    connect: Callable[[Settings], Engine] | None = None,
    sysfs_root: Path = Path("/sys"),
    containers_confs: tuple[Path, ...] | None = None,
    profile: HardwareProfile | None = None,
) -> Facts:
    """Ask podman and the host what `diagnose` needs; podman being away is a fact too."""
    if containers_confs is None:
        override = settings.environ.get("CONTAINERS_CONF")  # podman then reads only this one
        containers_confs = (Path(override),) if override else CONTAINERS_CONFS
    engine_info, error, images = None, None, {}
    if connect is None:
        from vkrama.engine import connect as connect_engine

        connect = connect_engine
    try:
        engine = connect(settings)
        engine_info = engine.info()
        images = _images(engine)
    except VkramaError as failure:
        error = failure.message + (f" ({failure.hint})" if failure.hint else "")
    limits = {}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        limits[name] = -1 if hard == resource.RLIM_INFINITY else hard
    cgroup = sysfs_root / "fs" / "cgroup"
    hybrid = (cgroup / "unified").is_dir() and not (cgroup / "cgroup.controllers").exists()
    power = find_counters(profile, sysfs_root) if profile is not None else None
    confs = _default_ulimits(containers_confs)
    return Facts(engine_info, error, images, limits, confs, hybrid, power)


def diagnose(profile: HardwareProfile, facts: Facts) -> list[Check]:
    checks = [_engine(facts)]
    if facts.engine:
        checks.append(_runtime(facts))
    checks.append(_ulimits(facts))
    checks += _gpus(profile)
    checks += [_node(profile, node.path) for node in profile.nodes if _matters(node.path)]
    checks.append(_cdi(profile))
    checks += _power(facts.power)
    checks.append(_oneapi(profile))
    for backend, built in sorted(facts.images.items()):
        checks.append(
            Check(f"image {backend}", "ok", "built")
            if built
            else Check(
                f"image {backend}",
                "warn",
                "not built (built on first use)",
                f"vkrama images build {backend}",
            )
        )
    return checks


def _power(power: PowerCounters | None) -> list[Check]:
    """Which counters bench reads W and J/token from; a device without one is a warning
    (its rows say "no power counter"), with the fix where there is one to make."""
    if power is None:
        return []
    checks = [Check("power", "ok", line) for line in power.lines() if ": no power" not in line]
    for device, why in power.missing.items():
        fix = "pip install 'vkrama[nvidia]'" if why == NVML_MISSING else None
        checks.append(Check("power", "warn", f"{device}: no power counter: {why}", fix))
    return checks


def _engine(facts: Facts) -> Check:
    if facts.engine is None:
        return Check(
            "podman",
            "fail",
            facts.engine_error or "unreachable",
            "install podman, or point --engine-url at its API socket",
        )
    info = facts.engine
    mode = "rootless" if info.rootless else "rootful"
    return Check("podman", "ok", f"{info.version} ({mode}) at {info.url} [{info.source}]")


def _runtime(facts: Facts) -> Check:
    assert facts.engine is not None
    runtime = facts.engine.oci_runtime
    if runtime == "crun" and facts.cgroup_hybrid:
        return Check(
            "OCI runtime",
            "fail",
            "crun refuses cgroups in hybrid mode (v1 + unified)",
            'install runc and set runtime = "runc" under [engine] in containers.conf',
        )
    return Check("OCI runtime", "ok", runtime)


def _ulimits(facts: Facts) -> Check:
    nofile = facts.hard_limits.get("nofile", -1)
    detail = ", ".join(
        f"{k} hard {'unlimited' if v < 0 else v}" for k, v in sorted(facts.hard_limits.items())
    )
    if 0 <= nofile < PODMAN_DEFAULT_NOFILE and not facts.default_ulimits:
        # vkrama's own containers clamp themselves; image builds' RUN steps do not.
        return Check(
            "ulimits",
            "warn",
            f"{detail}: below podman's default ask, "
            "so `podman build` RUN steps fail with setrlimit",
            ULIMITS_FIX,
        )
    extra = (
        f"; containers.conf: {', '.join(facts.default_ulimits)}" if facts.default_ulimits else ""
    )
    return Check("ulimits", "ok", detail + extra)


def _gpus(profile: HardwareProfile) -> list[Check]:
    checks = [Check("detect", "warn", problem) for problem in profile.problems]
    if not profile.gpus:
        checks.append(
            Check("GPUs", "ok", "none found: cpu, vulkan/lavapipe and oneapi/opencl-cpu only")
        )
    else:
        names = "; ".join(f"{g.index}: {g.name} ({g.kernel_driver})" for g in profile.gpus)
        checks.append(Check("GPUs", "ok", names))
    return checks


def _matters(path: str) -> bool:
    return path.startswith(("/dev/dri/renderD", "/dev/kfd", "/dev/nvidia"))


def _node(profile: HardwareProfile, path: str) -> Check:
    node = profile.node(path)
    assert node is not None
    group = _group_name(node.gid)
    detail = f"mode {node.mode:04o}, group {group} (gid {node.gid})"
    if node.accessible:
        return Check(path, "ok", f"read-write for you; {detail}")
    return Check(
        path,
        "warn",
        f"you cannot open it; {detail}; rootless podman will fail",
        f"sudo usermod -aG {group} $USER, then log in again",
    )


def _cdi(profile: HardwareProfile) -> Check:
    nvidia = [g for g in profile.gpus if g.kernel_driver == "nvidia"]
    specs = profile.cdi_specs
    names = ", ".join(name for spec in specs for name in spec.devices)
    if not nvidia:
        return Check("CDI", "ok", f"specs: {names}" if specs else "not needed (no NVIDIA GPU)")
    if not profile.cdi_devices():
        return Check(
            "CDI",
            "fail",
            "NVIDIA GPU but no nvidia.com/gpu CDI spec",
            "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
        )
    complete = [spec for spec in specs if spec.injects_vulkan]
    if not complete:
        gaps = "; ".join(spec.vulkan_gap() for spec in specs if spec.kind == "nvidia.com/gpu")
        return Check(
            "CDI", "warn", f"{names}; {gaps}, so NVIDIA Vulkan cannot run (CUDA can)", GRAPHICS_FIX
        )
    return Check("CDI", "ok", f"{names} (injects NVIDIA's Vulkan driver and its EGL path)")


def _oneapi(profile: HardwareProfile) -> Check:
    """Where SYCL runs here: an Intel GPU through Level Zero, else only the CPU device."""
    intel = [g for g in profile.gpus if g.kernel_driver in ("i915", "xe")]
    if not intel:
        return Check(
            "oneapi",
            "ok",
            "no Intel GPU: SYCL runs on Intel's OpenCL CPU device only (oneapi/opencl-cpu, "
            "a test device, asked for with --backend oneapi)",
        )
    cells = [check(profile, "oneapi", gpu) for gpu in intel]
    usable = "; ".join(f"GPU {c.gpu.index}: {c.reason}" for c in cells if c.ok and c.gpu)
    if usable:
        return Check("oneapi", "ok", usable)
    why = "; ".join(f"GPU {c.gpu.index}: {c.reason}" for c in cells if c.gpu)
    return Check(
        "oneapi", "warn", why, "share the GPU's /dev/dri render node into this environment"
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _images(engine: Engine) -> dict[str, bool]:
    from vkrama.engine import images as engine_images

    return {
        backend: engine_images.inspect(engine, f"localhost/vkrama/{backend}:latest") is not None
        for backend in BACKENDS
    }


def _default_ulimits(paths: tuple[Path, ...]) -> tuple[str, ...]:
    found: tuple[str, ...] = ()
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        value = data.get("containers", {}).get("default_ulimits")
        if isinstance(value, list):
            found = tuple(str(v) for v in value)  # a later file replaces the list
    return found
