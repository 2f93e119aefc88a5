"""Bench planning: the matrix of cells and one `ContainerSpec` per cell.

Stage: bench.plan (Choice + image + model ─► ContainerSpec). Pure: must not start
containers, build images or print. The only system read is `physical_cores`, which
reads CPU topology files it is pointed at (so tests feed it fake trees).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vkrama.backends import ALL_LAYERS
from vkrama.backends.compile_cache import CompileCache
from vkrama.engine.spec import ContainerSpec, Mount
from vkrama.llama_flags import FLAG
from vkrama.results.records import CellResult, CellStatus, RpcWorker, expected_tests

if TYPE_CHECKING:
    from vkrama.backends import Choice

MODEL_DIR = "/models"
FLASH_ATTN_VALUES = ("on", "off", "auto")
# Backends whose stack compiles GPU code the first time a shape needs it (ggml's Vulkan
# pipelines, through Mesa or NVIDIA's driver; SYCL's SPIR-V kernels, through the device's
# compiler): their cells run one repetition more than asked and the first is not counted
# (bench.measurements.warm says why). cpu, rocm and cuda run code compiled into the image
# for the GPU's target.
COLD_FIRST = {"vulkan": 1, "oneapi": 1}


def cold_reps(backend: str) -> int:
    """Repetitions a cell of `backend` runs first, cold, and does not count."""
    return COLD_FIRST.get(backend, 0)


@dataclass(frozen=True)
class BenchParams:
    """What every cell of one run measures; identical across cells by construction."""

    n_prompt: int = 512
    n_gen: int = 128
    repetitions: int = 5
    ngl: int | None = None  # None: all layers on GPU cells, 0 on cpu cells
    flash_attn: tuple[str, ...] = ()  # empty: llama-bench's own default
    threads: int | None = None  # None: physical cores of this host
    extra_args: tuple[str, ...] = ()
    depth: tuple[int, ...] = ()  # llama-bench -d: context already in the KV cache; empty: 0

    def expected_tests(self) -> list[str]:
        """Test names the cells should report (a failed cell gets one row per name), in
        llama-bench's order: flash attention outermost, then depth, then pp before tg."""
        return expected_tests(self.n_prompt, self.n_gen, self.flash_attn, self.depth)

    def as_dict(self) -> dict[str, object]:
        return {
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "repetitions": self.repetitions,
            "ngl": self.ngl,
            "flash_attn": list(self.flash_attn),
            "threads": self.threads,
            "extra_args": list(self.extra_args),
            "depth": list(self.depth),
        }


@dataclass(frozen=True)
class BenchCell:
    """One (backend, driver) cell of the matrix, ready to run."""

    backend: str
    driver: str | None
    device: str  # what we expect to run on, e.g. "llvmpipe (lavapipe)"; stderr may refine it
    image: str  # image reference the spec uses
    spec: ContainerSpec
    gpu_index: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()  # host indices of every GPU the cell uses, in ggml's order
    tuned: str = ""  # bench --tuned: the tuned flags it runs with (CellResult.tuned)
    tuning: str = ""  # bench --tuned: which tuning it runs, made for which test, in words
    cold_reps: int = 0  # leading repetitions of each test run cold and not counted
    rpc: tuple[RpcWorker, ...] = ()  # bench --rpc: the workers of a split cell

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.driver}" if self.driver else self.backend

    def failed(
        self, reason: str = "", status: CellStatus = CellStatus.FAILED, duration_s: float = 0.0
    ) -> CellResult:
        """This cell's record when it measured nothing to count: the one place a cell's
        identity (backend, driver, device, image, command, GPUs) becomes a `CellResult`;
        runners add what they did measure with `dataclasses.replace`."""
        return CellResult(
            backend=self.backend,
            driver=self.driver,
            device=self.device,
            status=status,
            reason=reason,
            image=self.image,
            command=self.spec.command,
            duration_s=round(duration_s, 3),
            gpus=self.gpus,
            tuned=self.tuned,
            rpc=self.rpc,
        )

    @classmethod
    def of(cls, choice: Choice, image: str, spec: ContainerSpec, cold: int = 0) -> BenchCell:
        return cls(
            backend=choice.backend,
            driver=choice.driver,
            device=choice.device_label,
            image=image,
            spec=spec,
            gpu_index=choice.gpu.index if choice.gpu is not None else None,
            labels=spec.labels,
            gpus=choice.gpu_indices,
            cold_reps=cold,
        )


def cell_env(
    env: Mapping[str, str], overrides: Mapping[str, str] | None, unset: Iterable[str]
) -> dict[str, str]:
    """A cell's environment: the choice's, then the user's --env, minus --unset-env."""
    found = {**env, **(overrides or {})}
    for name in unset:
        found.pop(name, None)
    return found


def physical_cores(
    sysfs_cpu: Path = Path("/sys/devices/system/cpu"), cpuinfo: Path = Path("/proc/cpuinfo")
) -> int:
    """Physical cores (not hyper-threads): what llama.cpp itself uses for its threads."""
    cores: set[tuple[str, str]] = set()
    for topology in sysfs_cpu.glob("cpu[0-9]*/topology"):
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            continue
        cores.add((package, core))
    if cores:
        return len(cores)
    return _cores_from_cpuinfo(cpuinfo)


def _cores_from_cpuinfo(cpuinfo: Path) -> int:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return 1
    cores: set[tuple[str, str]] = set()
    processors = 0
    for block in text.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "processor" in fields:
            processors += 1
        if "physical id" in fields and "core id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
    return len(cores) or max(processors, 1)


def llama_bench_args(
    params: BenchParams,
    model_file: str,
    backend: str,
    threads: int,
    split: tuple[str, ...] = (),
    cold: int | None = None,
) -> tuple[str, ...]:
    """The llama-bench command line; only -ngl differs between cpu and GPU cells (a split
    cell's layers all go to its workers). `cold`: first repetitions not counted (default:
    the backend's)."""
    ngl = params.ngl
    if ngl is None:
        ngl = 0 if backend == "cpu" else ALL_LAYERS
    argv = [
        "llama-bench",
        "-m",
        f"{MODEL_DIR}/{model_file}",
        "-p",
        str(params.n_prompt),
        "-n",
        str(params.n_gen),
        "-r",
        str(params.repetitions + (cold_reps(backend) if cold is None else cold)),
        FLAG["ngl"].bench,
        str(ngl),
        FLAG["t"].bench,
        str(threads),
    ]
    if params.flash_attn:
        argv += [FLAG["fa"].bench, ",".join(params.flash_attn)]
    if params.depth:
        argv += ["-d", ",".join(str(d) for d in params.depth)]
    argv += list(split)  # -sm/-ts of a cell split over several GPUs
    argv += list(params.extra_args)
    argv += ["-o", "json"]
    return tuple(argv)


@dataclass(frozen=True)
class Slot:
    """Where a cell sits in its run and what it runs on: the part of a cell both benchmarks
    plan alike (llama-bench's `plan_cell`, the serving bench's `serving.plan_serve_cell`)."""

    choice: Choice
    image: str
    run_token: str
    position: int
    env_overrides: Mapping[str, str] = field(default_factory=dict)  # --env
    env_unset: tuple[str, ...] = ()  # --unset-env
    compile_cache: CompileCache | None = None

    def name(self, kind: str) -> str:
        return cell_name(kind, self.run_token, self.position, self.choice)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        return cell_env(env, self.env_overrides, self.env_unset)


def plan_cell(
    slot: Slot, model_files: Sequence[Path], model_name: str, params: BenchParams, *, threads: int
) -> BenchCell:
    """One cell's container: the choice's passthrough, the model read-only, llama-bench."""
    choice, image, compile_cache = slot.choice, slot.image, slot.compile_cache
    env = dict(choice.env)
    mounts = tuple(Mount(path, f"{MODEL_DIR}/{path.name}") for path in model_files)
    if compile_cache is not None:
        mounts += (Mount(compile_cache.host_dir, compile_cache.target, read_only=False),)
        env.update(compile_cache.env)
    env = slot.env(env)
    device = choice.device_label
    labels = {
        "vkrama.role": "bench",
        "vkrama.model": model_name,
        "vkrama.backend": choice.backend,
        "vkrama.driver": choice.driver or "",
        "vkrama.device": device,
        "vkrama.bench-run": slot.run_token,
    }
    if choice.gpu_indices:
        labels["vkrama.gpus"] = ",".join(str(i) for i in choice.gpu_indices)
    split = choice.split.bench_args() if choice.split is not None else ()
    spec = ContainerSpec(
        image=image,
        command=llama_bench_args(params, model_files[0].name, choice.backend, threads, split),
        name=slot.name("bench"),
        labels=labels,
        env=env,
        devices=tuple(choice.devices),
        group_add=tuple(choice.group_add),
        mounts=mounts,
        network="none",  # llama-bench reads a mounted file and talks to nobody
    )
    return BenchCell.of(choice, image, spec, cold_reps(choice.backend))


def cell_name(kind: str, run_token: str, position: int, choice: Choice) -> str:
    """A container name unique to the run and cell that says what runs in it."""
    text = f"{choice.backend}-{choice.driver}" if choice.driver else choice.backend
    return f"vkrama-{kind}-{run_token}-{position}-{re.sub(r'[^a-z0-9-]+', '-', text.lower())}"
