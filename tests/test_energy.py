"""Energy per test: power counters found on fake sysfs trees and a fake NVML, read by
vkrama's sampler while a counter advances at a known wattage on a fake clock, and each
test's share of a trace.

The reference is the fake counter's own schedule (20 W idle, then 80 W), never vkrama's
arithmetic run twice: a figure must land near the wattage the counter was driven at. The
sampler reads on the fake clock's ticks, so no figure here depends on how busy the host is
(one run at load 8 once failed when the counters ran in real time, written by a thread);
its thread is tested apart, by what holds at any speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakesys import FakeHost, intel_igpu_and_amd_dgpu, two_nvidia_h100s

from vkrama.bench import energy
from vkrama.bench.energy import Trace, Window
from vkrama.bench.powerwatch import PowerWatch
from vkrama.hardware.power import ENERGY, POWER, Counter, PowerCounters, find_counters
from vkrama.results import report
from vkrama.results.energy import Energy
from vkrama.results.records import CellResult, CellStatus, Measurement, RunStatus

DATA = Path(__file__).parent / "data" / "bench"
IDLE_W, BUSY_W = 20.0, 80.0


@dataclass
class Schedule:
    """Joules a device has drawn since `origin`: IDLE_W until `switch`, BUSY_W after."""

    origin: float = field(default_factory=time.time)
    switch: float = float("inf")

    def watts(self, at: float) -> float:
        return BUSY_W if at >= self.switch else IDLE_W

    def joules(self, at: float) -> float:
        if at < self.switch:
            return IDLE_W * (at - self.origin)
        return IDLE_W * (self.switch - self.origin) + BUSY_W * (at - self.switch)


@dataclass
class CounterFile:
    """A sysfs counter file holding the schedule's value at the fake clock's time: µJ for
    an energy counter (wrapping past `wrap_uj` like RAPL), µW for a power reading."""

    path: Path
    schedule: Schedule
    clock: FakeClock
    kind: str = ENERGY
    wrap_uj: int | None = None

    def value(self) -> int:
        if self.kind == POWER:
            return int(self.schedule.watts(self.clock.now) * 1e6)
        micro = int(self.schedule.joules(self.clock.now) * 1e6)
        return micro % self.wrap_uj if self.wrap_uj else micro

    def write(self) -> None:
        self.path.write_text(f"{self.value()}\n")


@dataclass
class FakeClock:
    """Time that passes only when the sampler sleeps or the test ticks it; each counter
    file is rewritten as it passes, so a read sees the value of the moment it is stamped."""

    now: float = 1_000.0
    files: list[CounterFile] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for counter in self.files:
            counter.write()


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def schedule(clock: FakeClock) -> Schedule:
    return Schedule(origin=clock.now)


@pytest.fixture
def drive(clock: FakeClock) -> Callable[..., None]:
    """`drive(path, schedule)`: the file at `path` follows `schedule` on the fake clock."""

    def start(path: Path, schedule: Schedule, kind: str = ENERGY, wrap: int | None = None) -> None:
        counter = CounterFile(path, schedule, clock, kind, wrap)
        counter.write()
        clock.files.append(counter)

    return start


def fake_nvml(
    schedule: Schedule, now: Callable[[], float], energy_counter: bool = True
) -> SimpleNamespace:
    """NVML as nvidia-ml-py presents it, for GPUs drawing by the schedule: mJ, mW."""

    def total_energy(handle: str) -> int:
        if not energy_counter:
            raise NotSupported("Not Supported")
        return int(schedule.joules(now()) * 1e3)

    return SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByPciBusId=lambda address: address,
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        nvmlDeviceGetPowerUsage=lambda handle: int(schedule.watts(now()) * 1e3),
    )


class NotSupported(Exception):
    """What nvidia-ml-py raises (NVMLError_NotSupported) for a counter the GPU lacks."""


# -- what the host has ------------------------------------------------------------------


def test_rapl_package_zones_are_the_cpus_counters_and_their_subzones_are_not(
    host: FakeHost,
) -> None:
    host.add_rapl_zone(0)
    host.add_rapl_zone(1)
    inner = host.sysfs / "class" / "powercap" / "intel-rapl:0:0"
    inner.symlink_to("../../devices/virtual/powercap/intel-rapl/intel-rapl:0")
    found = find_counters(host.detect(), host.sysfs)
    assert [c.name.split(" (")[0] for c in found.cpu] == ["RAPL package-0", "RAPL package-1"]
    assert found.cpu[0].wrap_joules == pytest.approx(262143.32885, rel=1e-6)
    assert found.for_cell(()) == (found.cpu, "")


def test_a_host_without_powercap_says_so_and_has_no_counter(host: FakeHost) -> None:
    found = find_counters(host.detect(), host.sysfs)
    assert found.cpu == ()
    counters, why = found.for_cell(())
    assert counters == () and "no " in why and "powercap" in why and "VM" in why
    assert found.lines() == [f"CPU: no power counter: {why}"]


def test_rapl_readable_by_root_only_is_refused_with_why(host: FakeHost) -> None:
    """energy_uj is 0400 since Linux 5.10; root reads it anyway, so the reading runs in a
    child without the capabilities that let root past file modes (or as a user)."""
    host.add_rapl_zone(0).chmod(0o400)
    os.chmod(host.sysfs / "devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj", 0)
    script = (
        "import sys, json; from pathlib import Path;"
        "from vkrama.hardware import detect; from vkrama.hardware.power import find_counters;"
        "root = Path(sys.argv[1]);"
        "found = find_counters(detect(root, root), root);"
        "print(json.dumps(found.missing))"
    )
    command = [sys.executable, "-c", script, str(host.sysfs)]
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", "--inh-caps=-all", f"--bounding-set={drop}", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    missing = json.loads(done.stdout)
    assert "readable by root only" in missing["CPU"] and "energy_uj" in missing["CPU"]


def test_amdgpu_and_intel_gpus_read_their_hwmon(host: FakeHost) -> None:
    intel_igpu_and_amd_dgpu(host)
    host.add_hwmon("0000:00:02.0", "energy1_input", 5)
    host.add_hwmon("0000:03:00.0", "power1_average", 30_000_000)
    found = find_counters(host.detect(), host.sysfs)
    assert (found.gpus[0].kind, found.gpus[1].kind) == (ENERGY, POWER)
    assert found.gpus[1].read() == pytest.approx(30.0)  # µW to W
    assert found.for_cell((1,)) == ((found.gpus[1],), "")


def test_a_gpu_without_hwmon_has_no_counter_and_a_split_over_it_none(host: FakeHost) -> None:
    intel_igpu_and_amd_dgpu(host)
    host.add_hwmon("0000:03:00.0", "power1_average", 1)
    found = find_counters(host.detect(), host.sysfs)
    counters, why = found.for_cell((0, 1))
    assert counters == () and why.startswith("GPU 0 (") and "no hwmon" in why


def test_nvidia_without_nvidia_ml_py_says_how_to_get_it(host: FakeHost) -> None:
    two_nvidia_h100s(host)

    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    found = find_counters(host.detect(), host.sysfs, nvml=missing)
    _, why = found.for_cell((0,))
    assert "nvidia-ml-py is not installed" in why and "vkrama[nvidia]" in why


def test_nvml_that_spells_the_bus_id_its_own_way_is_walked(
    host: FakeHost, schedule: Schedule, clock: FakeClock
) -> None:
    """NVML's bus ids have an 8-digit domain; a lookup by sysfs's 4-digit one that fails
    falls back to walking the devices."""
    two_nvidia_h100s(host)
    module = fake_nvml(schedule, clock.time)
    clock.sleep(2.0)  # 40 J drawn
    profile = host.detect()
    ids = [f"0000{g.pci_address}".encode() for g in profile.gpus]

    def strict(address: str) -> str:
        raise NotSupported("Not Found")

    module.nvmlDeviceGetHandleByPciBusId = strict
    module.nvmlDeviceGetCount = lambda: len(ids)
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    module.nvmlDeviceGetPciInfo = lambda handle: SimpleNamespace(busId=ids[int(handle[3:])])
    found = find_counters(profile, host.sysfs, nvml=lambda: module)
    assert sorted(found.gpus) == [0, 1] and list(found.missing) == ["CPU"]
    assert found.gpus[1].read() == pytest.approx(IDLE_W * 2.0)


def test_nvml_that_cannot_start_is_quoted(host: FakeHost) -> None:
    two_nvidia_h100s(host)

    class LibraryNotFound(Exception):
        pass

    def init() -> None:
        raise LibraryNotFound("NVML Shared Library Not Found")

    module = SimpleNamespace(nvmlInit=init)
    _, why = find_counters(host.detect(), host.sysfs, nvml=lambda: module).for_cell((1,))
    assert why.endswith("NVML could not start: LibraryNotFound: NVML Shared Library Not Found")


def test_nvml_without_an_energy_counter_falls_back_to_its_power_reading(
    host: FakeHost, schedule: Schedule, clock: FakeClock
) -> None:
    two_nvidia_h100s(host)
    module = fake_nvml(schedule, clock.time, energy_counter=False)
    found = find_counters(host.detect(), host.sysfs, nvml=lambda: module)
    assert found.gpus[0].kind == POWER and found.gpus[0].read() == pytest.approx(IDLE_W)


# -- reading a counter at a known wattage, on a fake clock ------------------------------


def watching(counters: tuple[Counter, ...], clock: FakeClock, **settings: Any) -> PowerWatch:
    """vkrama's sampler on the fake clock: its idle read waits by it, stamps by it."""
    return PowerWatch(counters, clock=clock.time, timer=clock.time, sleep=clock.sleep, **settings)


def busy(watch: PowerWatch, clock: FakeClock, seconds: float = 3.6) -> Trace:
    """The cell: a read at once, then one every 0.1 s for `seconds`, as the sampler's thread
    makes them, and the read `finish()` adds."""
    watch.tick()
    for _ in range(round(seconds / 0.1)):
        clock.sleep(0.1)
        watch.tick()
    return watch.finish()


def measure(counters: tuple[Counter, ...], schedule: Schedule, clock: FakeClock) -> Energy:
    """Idle for 0.5 s, then the device draws BUSY_W for 3.6 s; the middle 3 s are the test
    (the counter is read every 0.1 s throughout, by vkrama's own sampler)."""
    watch = watching(counters, clock, idle_s=0.5)
    watch.idle()
    schedule.switch = clock.now
    trace = busy(watch, clock)
    (found,) = energy.per_test(trace, [Window(schedule.switch + 0.3, schedule.switch + 3.3, 600)])
    return found


def test_the_sampler_reads_on_its_own_thread_from_start_until_finish() -> None:
    """`start()`'s thread reads the counter until `finish()`, which reads it once more when
    the thread has stopped: every read is in the trace, in order. Checked by what holds at
    any speed (how many reads a host makes in a second is its load's doing)."""
    reads: list[float] = []
    enough = threading.Event()

    def count() -> float:
        reads.append(float(len(reads)))
        if len(reads) >= 3:
            enough.set()
        return reads[-1]

    watch = PowerWatch((Counter("fake", ENERGY, count),), interval=0.01)
    watch.start()
    assert enough.wait(timeout=120)  # three reads of its own, however slow the host
    trace = watch.finish()
    assert not any(thread.name == "vkrama-power" for thread in threading.enumerate())
    assert [value for _, (value,) in trace.busy] == reads and len(reads) >= 4
    stamps = [at for at, _ in trace.busy]
    assert stamps == sorted(stamps) and trace.idle == ()


def check(found: Energy) -> None:
    assert found.note == ""
    # exact on the fake clock but for the counters' whole µJ, mW and µW
    assert found.watts == pytest.approx(BUSY_W, rel=0.001)
    assert found.idle_watts == pytest.approx(IDLE_W, rel=0.001)
    # 60 W above idle for 3 s over 600 tokens
    assert found.joules_per_token == pytest.approx((BUSY_W - IDLE_W) * 3.0 / 600, rel=0.001)


@dataclass
class Cooling(Schedule):
    """A GPU that has just finished the previous cell: it draws `steps` (seconds from
    `origin`, watts) one after another, then IDLE_W until `switch`, BUSY_W after."""

    steps: tuple[tuple[float, float], ...] = ((1.2, 133.0),)

    def _segments(self) -> list[tuple[float, float, float]]:
        """(from, to, watts) in wall-clock time, up to the switch."""
        out, at = [], self.origin
        for seconds, watts in self.steps:
            out.append((at, at + seconds, watts))
            at += seconds
        return [*out, (at, float("inf"), IDLE_W)]

    def watts(self, at: float) -> float:
        if at >= self.switch:
            return BUSY_W
        return next(w for start, end, w in self._segments() if start <= at < end)

    def joules(self, at: float) -> float:
        upto = min(at, self.switch)
        drawn = sum(
            w * (min(end, upto) - start) for start, end, w in self._segments() if start < upto
        )
        return drawn + (BUSY_W * (at - self.switch) if at > self.switch else 0.0)


def test_the_idle_draw_is_read_once_the_previous_cells_heat_has_gone(
    host: FakeHost, drive: Any, clock: FakeClock
) -> None:
    # 133 W for 1.2 s after the last cell (as an H100 drew when vulkan's cell followed
    # cuda's), then 20 W: the baseline is the 20 W, so J/token is the work's own.
    steps = tuple((0.4, watts) for watts in (133.0, 110.0, 90.0, 70.0, 50.0, 35.0))
    cooling = Cooling(origin=clock.now, steps=steps)
    drive(host.add_rapl_zone(0), cooling)
    check(measure(find_counters(host.detect(), host.sysfs).cpu, cooling, clock))


def test_a_plateau_of_heat_is_not_taken_for_idle_once_the_run_has_seen_idle(
    host: FakeHost, drive: Any, clock: FakeClock
) -> None:
    # Flat at 133 W for longer than two idle windows: it looks settled, but an earlier cell
    # of this run read the same counter idle at 20 W, and that is the baseline.
    hot = Cooling(origin=clock.now, steps=((1.5, 133.0),))
    drive(host.add_rapl_zone(0), hot)
    counters = find_counters(host.detect(), host.sysfs).cpu
    floors = {" + ".join(counter.name for counter in counters): IDLE_W}
    watch = watching(counters, clock, idle_s=0.5, floors=floors)
    watch.idle()
    hot.switch = clock.now
    (found,) = energy.per_test(
        busy(watch, clock), [Window(hot.switch + 0.3, hot.switch + 3.3, 600)]
    )
    check(found)


def test_an_idle_draw_that_never_settles_gives_watts_but_no_joules_per_token(
    host: FakeHost, drive: Any, clock: FakeClock
) -> None:
    falling = Cooling(origin=clock.now, steps=tuple((0.5, 200.0 - 25 * i) for i in range(7)))
    drive(host.add_rapl_zone(0), falling)
    counters = find_counters(host.detect(), host.sysfs).cpu
    watch = watching(counters, clock, settle_s=1.5, idle_s=0.5)
    watch.idle()
    falling.switch = clock.now
    (found,) = energy.per_test(
        busy(watch, clock), [Window(falling.switch + 0.3, falling.switch + 3.3, 600)]
    )
    assert found.joules_per_token is None
    assert found.watts == pytest.approx(BUSY_W, rel=0.001)
    assert found.note.startswith("the idle draw before the cell had not settled after 1.5 s")


def test_rapl_at_a_known_wattage(
    host: FakeHost, schedule: Schedule, drive: Any, clock: FakeClock
) -> None:
    drive(host.add_rapl_zone(0), schedule)
    check(measure(find_counters(host.detect(), host.sysfs).cpu, schedule, clock))


def test_rapl_wrapping_round_its_range_mid_test(
    host: FakeHost, schedule: Schedule, drive: Any, clock: FakeClock
) -> None:
    # 100 J of range at 80 W: the counter starts again from 0 three times during the test
    drive(host.add_rapl_zone(0, wrap_uj=100_000_000), schedule, wrap=100_000_000)
    check(measure(find_counters(host.detect(), host.sysfs).cpu, schedule, clock))


def test_amdgpu_power_average_at_a_known_wattage(
    host: FakeHost, schedule: Schedule, drive: Any, clock: FakeClock
) -> None:
    intel_igpu_and_amd_dgpu(host)
    drive(host.add_hwmon("0000:03:00.0", "power1_average"), schedule, POWER)
    found = find_counters(host.detect(), host.sysfs)
    check(measure(found.for_cell((1,))[0], schedule, clock))


def test_intel_hwmon_energy_at_a_known_wattage(
    host: FakeHost, schedule: Schedule, drive: Any, clock: FakeClock
) -> None:
    intel_igpu_and_amd_dgpu(host)
    drive(host.add_hwmon("0000:00:02.0", "energy1_input"), schedule)
    found = find_counters(host.detect(), host.sysfs)
    check(measure(found.for_cell((0,))[0], schedule, clock))


def test_nvml_energy_at_a_known_wattage(
    host: FakeHost, schedule: Schedule, clock: FakeClock
) -> None:
    two_nvidia_h100s(host)
    module = fake_nvml(schedule, clock.time)
    found = find_counters(host.detect(), host.sysfs, nvml=lambda: module)
    assert found.gpus[0].kind == ENERGY
    check(measure(found.for_cell((0,))[0], schedule, clock))


def test_a_split_sums_its_gpus(host: FakeHost, schedule: Schedule, clock: FakeClock) -> None:
    two_nvidia_h100s(host)
    module = fake_nvml(schedule, clock.time)
    found = find_counters(host.detect(), host.sysfs, nvml=lambda: module)
    both = measure(found.for_cell((0, 1))[0], schedule, clock)
    assert both.watts == pytest.approx(2 * BUSY_W, rel=0.001)
    assert both.idle_watts == pytest.approx(2 * IDLE_W, rel=0.001)


# -- a trace's arithmetic on known reads -----------------------------------------------


def rapl(wrap: float | None = None) -> Counter:
    return Counter("RAPL package-0", ENERGY, lambda: 0.0, wrap)


Reads = tuple[tuple[float, tuple[float, ...]], ...]


def reads(
    watts: float, start: float, seconds: float, wrap: float | None = None, at0: float = 0.0
) -> Reads:
    """An energy counter's reads every 0.1 s at `watts` from `start` (J = at0 + W t)."""
    count = round(seconds / 0.1) + 1
    out = []
    for step in range(count):
        joules = at0 + watts * step * 0.1
        out.append((start + step * 0.1, (joules % wrap if wrap else joules,)))
    return tuple(out)


def test_a_counter_that_stops_gives_no_figure() -> None:
    idle = ((0.0, (5.0,)), (1.0, (5.0,)))
    busy = tuple((1.0 + step * 0.1, (5.0,)) for step in range(40))
    (found,) = energy.per_test(Trace((rapl(),), idle, busy), [Window(1.5, 4.5, 100)])
    assert found.joules_per_token is None and found.watts is None
    assert "did not advance" in found.note


def test_an_energy_counter_that_goes_back_without_a_known_range_gives_no_figure() -> None:
    busy = reads(50, 1.0, 4.0)
    busy = busy[:20] + tuple((at, (value[0] - 150.0,)) for at, value in busy[20:])
    (found,) = energy.per_test(Trace((rapl(),), reads(10, 0, 1), busy), [Window(1.5, 4.5, 10)])
    assert "went back" in found.note and found.joules_per_token is None


def test_a_wrap_inside_the_idle_read_is_unwrapped_too() -> None:
    trace = Trace((rapl(wrap=7.0),), reads(10, 0, 1, wrap=7.0), reads(50, 1, 4, 7.0, at0=10))
    idle, why = energy.idle_watts(trace)
    assert why == "" and idle == pytest.approx(10.0)


def test_a_test_shorter_than_the_sampling_period_is_refused_with_a_hint() -> None:
    trace = Trace((rapl(),), reads(10, 0, 1), reads(50, 1, 4, at0=10))
    (found,) = energy.per_test(trace, [Window(2.0, 2.05, 10)])
    assert found.joules_per_token is None and found.watts is None
    assert found.note.startswith("too short to measure: its counted repetitions ran 0.05 s")
    assert "-r, -p or -n" in found.note


def test_a_test_that_drew_no_more_than_idle_gets_no_joules_per_token() -> None:
    trace = Trace((rapl(),), reads(30, 0, 1), reads(30, 1, 4, at0=30))
    (found,) = energy.per_test(trace, [Window(1.5, 4.5, 10)])
    assert found.joules_per_token is None and found.watts == pytest.approx(30.0)
    assert "drew no more than idle" in found.note


def test_a_counter_that_failed_mid_cell_gives_its_reason() -> None:
    trace = Trace((rapl(),), reads(10, 0, 1), reads(50, 1, 1), failure="reading failed: EIO")
    (found,) = energy.per_test(trace, [Window(1.0, 4.0, 10)])
    assert found.note == "reading failed: EIO"


# -- placing llama-bench's tests in time ------------------------------------------------


def test_each_test_is_placed_before_its_json_object_arrived() -> None:
    raw = json.loads((DATA / "cpu-fa.json").read_text())  # 4 tests of 2 repetitions
    lines = json.dumps(raw, indent=2).splitlines()
    arrived = [100.0, 101.5, 103.0, 106.0]
    stamped, opened = [], 0
    for line in lines:
        if line.strip() == "{":
            opened += 1
        stamped.append((arrived[opened - 1] if opened else 99.0, line))
    found = energy.windows(raw, stamped, cold_reps=1)
    # the counted repetition is the second; pp64 then tg16, twice (samples_ns in the file)
    assert found == [
        Window(100.0 - 0.221928649, 100.0, 64),
        Window(101.5 - 0.347780491, 101.5, 16),
        Window(103.0 - 0.051765904, 103.0, 64),
        Window(106.0 - 0.993813756, 106.0, 16),
    ]
    assert energy.windows(raw, stamped[:3], cold_reps=0) == [
        Window(100.0 - 0.268939390, 100.0, 128),
        None,
        None,
        None,
    ]


# -- where it shows ---------------------------------------------------------------------


def cell(backend: str, joules: float | None, note: str = "") -> CellResult:
    found = Energy("NVML energy 0000:01:00.0", 250.0, 60.0, joules, 3.2, note)
    if joules is None:
        found = Energy(note=note)
    measured = Measurement("tg128", 0, 128, 100.0 if backend == "cuda" else 90.0, 0.5, (100.0,))
    return CellResult(
        backend, None, "GPU", CellStatus.OK, measurements=(replace_energy(measured, found),)
    )


def replace_energy(m: Measurement, found: Energy) -> Measurement:
    from dataclasses import replace

    return replace(m, energy=found)


def test_the_table_and_verdict_carry_watts_and_joules_per_token() -> None:
    cells = [cell("cuda", 0.84), cell("vulkan", 0.71)]
    text = report.bench_table(report.rows(1, cells))
    header = text.splitlines()[0].split()
    assert header[-3:] == ["W", "J/token", "status"]
    assert "250.0  0.84" in text and "250.0  0.71" in text
    assert "J/token is the energy above the idle draw measured just before the cell" in text
    assert text.endswith(
        "tg128: cuda fastest at 100.0 ± 0.5 t/s, 1.11x vulkan: beyond noise; "
        "J/token above idle: cuda 0.84, vulkan 0.71"
    )


def test_a_row_without_a_counter_says_why_and_never_shows_zero() -> None:
    cells = [cell("cpu", None, "no power counter: no /sys/class/powercap")]
    text = report.bench_table(report.rows(1, cells))
    row = text.splitlines()[2].split()
    assert row[-3:] == ["-", "-", "ok"]
    assert "cpu: no power counter: no /sys/class/powercap" in text
    assert "J/token above idle" not in text


def test_energy_is_stored_and_read_back(settings: Any) -> None:
    from vkrama import results

    run = results.start_run(settings, run_info())
    results.add_cell(settings, run, 0, cell("cuda", 0.84))
    results.add_cell(settings, run, 1, cell("cpu", None, "no power counter: why"))
    stored = results.get_run(settings, run).cells
    assert stored[0].measurements[0].energy == cell("cuda", 0.84).measurements[0].energy
    assert stored[1].measurements[0].energy == Energy(note="no power counter: why")


def run_info() -> Any:
    from vkrama import results

    return results.RunInfo(
        host="h",
        kernel="k",
        gpus=[],
        gpu_key="none",
        model_name="m",
        model_sha256="0" * 64,
        params={},
        vkrama_version="0",
    )


def test_doctor_lines_name_each_counter_and_each_missing_one(host: FakeHost) -> None:
    intel_igpu_and_amd_dgpu(host)
    host.add_hwmon("0000:03:00.0", "power1_average", 1)
    host.add_rapl_zone(0)
    lines = find_counters(host.detect(), host.sysfs).lines()
    assert lines[0].startswith("GPU 1: hwmon power1_average (")
    assert lines[1].startswith("CPU: RAPL package-0 (")
    assert lines[2].startswith("GPU 0 (") and ": no power counter: " in lines[2]
    assert PowerCounters().for_cell(()) == ((), "none found")


# -- end to end on this host ------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.slow
def test_a_real_bench_here_says_which_counter_it_read_or_why_none(
    vkrama: Callable[..., Any], tiny_model: Path
) -> None:
    """A cpu cell reads RAPL. Where this host has none readable (a VM, a container, no
    root), every row says "no power counter" and why, and no row shows a 0."""
    done = vkrama("bench", str(tiny_model), "--backend", "cpu", "-p", "64", "-n", "16", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["test"] for row in rows] == ["pp64", "tg16"]
    powercap = Path("/sys/class/powercap")
    zones = sorted(powercap.glob("intel-rapl:*")) if powercap.is_dir() else []
    readable = [z for z in zones if os.access(z / "energy_uj", os.R_OK)]
    for row in rows:
        found = row["energy"]
        if not powercap.is_dir():
            assert found["note"] == (
                "no power counter: no /sys/class/powercap (no RAPL driver: a VM or a "
                "container does not expose one)"
            )
        elif not readable:
            assert found["note"].startswith("no power counter: ")
        else:  # tiny tests run for milliseconds: too short for any counter
            assert found["note"].startswith("too short to measure: ")
        assert found["watts"] is None and found["joules_per_token"] is None
    table = vkrama("results", "show", "1")
    assert table.returncode == 0, table.stderr
    assert "J/token" in table.stdout and "cpu: " in table.stdout


def test_the_csv_export_carries_each_tests_energy_or_why_none() -> None:
    import csv as csv_module
    import io

    from vkrama.results import db

    info = run_info()
    detail = db.RunDetail(
        db.RunRecord(7, info, "", RunStatus.OK, 2, 2),
        [cell("cuda", 0.84), cell("cpu", None, "no power counter: why")],
    )
    found = list(csv_module.DictReader(io.StringIO(report.export([detail], "csv"))))
    assert [(r["watts"], r["idle watts"], r["J/token"]) for r in found] == [
        ("250", "60", "0.84"),
        ("", "", ""),
    ]
    assert [r["energy note"] for r in found] == ["", "no power counter: why"]


def test_the_real_nvml_binding_on_a_host_without_nvidias_driver_says_what_nvml_answered(
    host: FakeHost,
) -> None:
    pytest.importorskip("pynvml")
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("this host has NVIDIA's driver")
    two_nvidia_h100s(host)
    _, why = find_counters(host.detect(), host.sysfs).for_cell((0,))
    assert why.endswith(
        "NVML could not start: NVMLError_LibraryNotFound: NVML Shared Library Not Found"
    )


class SwitchingEngine:
    """The real podman, telling the schedule when a cell's container is started: the fake
    counter draws IDLE_W before, BUSY_W from then on."""

    def __init__(self, engine: Any, schedule: Schedule) -> None:
        self.engine, self.schedule = engine, schedule

    def run_to_completion(self, spec: Any, timeout: Any = None, **watchers: Any) -> Any:
        self.schedule.switch = time.time()
        return self.engine.run_to_completion(spec, timeout, **watchers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


@pytest.mark.podman
@pytest.mark.slow
def test_real_llama_bench_tests_are_placed_inside_the_run_and_measured(
    engine: Any, settings: Any, tiny_model: Path
) -> None:
    """Real llama-bench in the cpu image, its stdout followed through podman's log: each
    test's counted repetitions fall inside the container's run (where the fake counter
    draws BUSY_W), never in the idle read before it."""
    from vkrama.bench import session
    from vkrama.bench.matrix import BenchRequest
    from vkrama.bench.plan import BenchParams
    from vkrama.bench.run import run_cell

    schedule = Schedule()  # in real time: the container runs in it
    counter = Counter("fake", ENERGY, lambda: schedule.joules(time.time()))
    params = BenchParams(n_prompt=128, n_gen=16, repetitions=6)
    request = BenchRequest(str(tiny_model), backends=("cpu",), params=params, save=False)
    (planned,) = session.prepare(settings, request, engine).cells
    result = run_cell(
        SwitchingEngine(engine, schedule),  # type: ignore[arg-type]
        planned,
        timeout=600,
        power=PowerCounters(cpu=(counter,)),
    )
    assert result.ok, result.reason
    assert [m.test for m in result.measurements] == ["pp128", "tg16"]
    for m in result.measurements:
        found = m.energy
        assert found is not None and found.idle_watts == pytest.approx(IDLE_W, rel=0.1)
        if found.seconds < energy.MIN_TEST_S:  # a fast host: said, with the hint
            assert found.note.startswith("too short to measure") and "-r" in found.note
            continue
        # a window placed before the container started would read IDLE_W for that part
        assert found.note == "" and found.watts == pytest.approx(BUSY_W, rel=0.05)
        tokens = (m.n_prompt + m.n_gen) * len(m.samples)
        expected = (BUSY_W - IDLE_W) * found.seconds / tokens
        assert found.joules_per_token == pytest.approx(expected, rel=0.05)


# -- serving levels ---------------------------------------------------------------------


def test_a_serving_levels_span_leaves_its_warm_up_out() -> None:
    """The energy of a level is cut at its own requests: the stub's clock sees the warm-up's
    requests arrive before the span, the level's inside it."""
    from serve_stub import ALIAS, Stub, serving

    from vkrama.bench import load, prompts
    from vkrama.bench.drive import LevelRunner

    with serving(Stub(slots=2, prefill_s=0.02, token_s=0.005)) as stub, load.EventLoop() as loop:
        target = load.Target(stub.url, ALIAS)
        prompt = prompts.build(stub.url, target.headers, 16)
        runner = LevelRunner(None, loop, target, prompt, 8, 2)  # a stub's CPU is not read
        stats = runner.measure(load.Level(2, None, 6))
    ((start, end),) = runner.windows
    offset = time.time() - time.monotonic()  # the stub stamps with the monotonic clock
    seen = sorted(at + offset for at in stub.arrivals)
    assert len(seen) == 2 + 6 and stats.requests == 6
    assert all(at < start for at in seen[:2])  # the warm-up: one request per client
    assert all(start <= at <= end for at in seen[2:])
    assert end - start >= stats.wall_s  # the span holds the whole level


def test_a_levels_joules_per_request_and_its_columns() -> None:
    from vkrama.results.levels import LevelStats
    from vkrama.results.serve_report import serve_rows, serve_table

    drew = Energy("NVML energy 0000:01:00.0", 300.0, 60.0, 0.5, 10.0)
    level = LevelStats(4, 10, 2, 10.0, None, None, None, None, None, 40.0, 1.0, 400, 900)
    level = replace_level(level, drew)
    # 0.5 J above idle per output token, 400 tokens over 8 answered requests
    assert level.joules_per_request == pytest.approx(25.0)
    assert LevelStats.from_dict(level.as_dict()) == level
    ok = CellResult("cuda", None, "GPU", CellStatus.OK, serving=(level,))
    text = serve_table(serve_rows(1, [ok]))
    assert text.splitlines()[0].split()[-3:] == ["W", "J/token", "J/req"]
    assert text.splitlines()[2].split()[-3:] == ["300.0", "0.5", "25"]
    none = replace_level(level, Energy(note="no power counter: why"))
    cpu = CellResult("cpu", None, "CPU", CellStatus.OK, serving=(none,))
    text = serve_table(serve_rows(1, [cpu]))
    assert text.splitlines()[2].split()[-3:] == ["-", "-", "-"]
    assert "cpu: no power counter: why" in text


def replace_level(level: Any, drew: Energy) -> Any:
    from dataclasses import replace

    return replace(level, energy=drew)
