"""Peak RSS of the Spark driver JVM, the Python workers and this process, read from /proc.

A daemon thread walks this process's descendants every ``interval`` seconds (no psutil, so
the benchmark needs nothing beyond the project's dependencies). Roles:

- ``driver_jvm``: the ``java`` process running ``SparkSubmit`` (driver = executor, local mode);
- ``python_workers``: Python processes under that JVM (``pyspark.daemon`` and its forks);
  reported as the largest single process and as the largest sum at one instant (forks share
  copy-on-write pages with the daemon, so the sum over-counts);
- ``python_driver``: this process;
- ``broker`` / ``moto``: the local stack, reported for context only.

It also measures CPU contention: the share of the machine's CPU time used by processes
*outside* this process tree during an interval (other jobs on a shared machine skew results;
``foreign_cpu_share`` > 0.1 means the figures of that interval are not trustworthy).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass
class Peaks:
    """Peak RSS in bytes per role, over one measured interval."""

    by_role: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def update(self, role: str, rss: int) -> None:
        self.by_role[role] = max(self.by_role[role], rss)

    def mib(self) -> dict[str, float]:
        return {role: round(rss / MIB, 1) for role, rss in sorted(self.by_role.items())}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return None


def _ppid_and_rss(pid: int) -> tuple[int, int] | None:
    stat = _read(f"/proc/{pid}/stat")
    statm = _read(f"/proc/{pid}/statm")
    if stat is None or statm is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]), int(statm.split()[1]) * _PAGE


def _tree_cpu_ticks(root: int) -> int:
    """utime + stime + cutime + cstime summed over ``root`` and its live descendants.

    Reaped children's time is in their parent's cutime/cstime, so the sum keeps growing
    smoothly as workers come and go inside the tree.
    """
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat is None:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = sum(int(f) for f in fields[11:15])
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    total, frontier, seen = 0, [root], 0
    while frontier and seen < 10_000:
        pid = frontier.pop()
        seen += 1
        total += ticks.get(pid, 0)
        frontier.extend(children.get(pid, ()))
    return total


def _machine_busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (every field of /proc/stat's cpu line but idle)."""
    line = (_read("/proc/stat") or "cpu 0").splitlines()[0].split()
    values = [int(v) for v in line[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(values) - values[3] - values[4]


@dataclass
class CpuShare:
    """CPU use during an interval, as shares of (elapsed x cores)."""

    own: float
    foreign: float


class CpuMeter:
    """Measures this tree's and everyone else's CPU share between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self._start: tuple[float, int, int] | None = None

    def start(self) -> None:
        self._start = (time.monotonic(), _machine_busy_ticks(), _tree_cpu_ticks(os.getpid()))

    def stop(self) -> CpuShare:
        assert self._start is not None
        began, busy0, own0 = self._start
        elapsed = max(time.monotonic() - began, 1e-6)
        capacity = elapsed * _TICKS * (os.cpu_count() or 1)
        busy = _machine_busy_ticks() - busy0
        own = _tree_cpu_ticks(os.getpid()) - own0
        return CpuShare(
            own=round(min(own / capacity, 1.0), 3),
            foreign=round(max(busy - own, 0) / capacity, 3),
        )


def _cmdline(pid: int) -> str:
    return (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ")


class RssMonitor:
    """Samples the RSS of this process tree in a background thread.

    Example:
        >>> with RssMonitor() as monitor:
        ...     monitor.start_interval("kafka_noop")
        ...     run()
        ...     peaks = monitor.end_interval()
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.overall = Peaks()
        self._current: Peaks | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)
        self._roles: dict[int, str] = {}
        self._cpu = CpuMeter()

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def start_interval(self) -> None:
        """Starts a fresh set of peaks and the CPU meter (for one measured path)."""
        self.sample()
        with self._lock:
            self._current = Peaks()
        self._cpu.start()

    def end_interval(self) -> tuple[dict[str, float], CpuShare]:
        """Returns the peaks (MiB) and the CPU shares since ``start_interval``."""
        cpu = self._cpu.stop()
        self.sample()
        with self._lock:
            current, self._current = self._current, None
        return (current.mib() if current is not None else {}), cpu

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _role(self, pid: int, parents: dict[int, int], me: int) -> str | None:
        """The role of a descendant of this process, or None if it is not one."""
        cmd = _cmdline(pid)
        if "SparkSubmit" in cmd:
            return "driver_jvm"
        if "kafka.Kafka" in cmd:
            return "broker"
        if "moto.server" in cmd:
            return "moto"
        ancestor = parents.get(pid)
        for _ in range(64):  # bounded walk up the tree
            if ancestor is None or ancestor == me or ancestor <= 1:
                return None
            if self._roles.get(ancestor) == "driver_jvm" and "python" in cmd:
                return "python_worker"
            ancestor = parents.get(ancestor)
        return None

    def sample(self) -> None:
        """Reads every process once and updates the peaks."""
        me = os.getpid()
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                got = _ppid_and_rss(int(entry))
                if got is not None:
                    parents[int(entry)], rss[int(entry)] = got
        # descendants of this process, parents before children
        children: dict[int, list[int]] = defaultdict(list)
        for pid, ppid in parents.items():
            children[ppid].append(pid)
        order: list[int] = []
        frontier = [me]
        while frontier and len(order) < 10_000:
            pid = frontier.pop()
            order.append(pid)
            frontier.extend(children.get(pid, ()))
        totals: dict[str, int] = defaultdict(int)
        for pid in order[1:]:
            if pid not in self._roles:
                role = self._role(pid, parents, me)
                if role is None:
                    continue
                self._roles[pid] = role
            role = self._roles[pid]
            if role == "python_worker":
                totals["python_workers_sum"] += rss[pid]
                role = "python_worker_max"
            totals[role] = max(totals[role], rss[pid])
        totals["python_driver"] = rss.get(me, 0)
        with self._lock:
            for role, value in totals.items():
                self.overall.update(role, value)
                if self._current is not None:
                    self._current.update(role, value)
