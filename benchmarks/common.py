"""What every benchmark script shares: timing, peak memory, the machine, the table, the JSON.

Timing: :func:`time_calls` runs ``warmup`` untimed calls (tracing, caches, pipeline start-up),
then times each of ``iterations`` calls with ``time.perf_counter``; a :class:`Timing` keeps every
sample (seconds) and reports their median, which one slow iteration (another process taking
the CPU) does not move. Full runs need at least :data:`MIN_ITERATIONS` timed iterations;
``--quick`` runs (smoke checks, not measurements) use :data:`QUICK_ITERATIONS`.

Memory: :func:`peak_rss_bytes` is the process's peak resident set size from
``resource.getrusage`` (``ru_maxrss``: KiB on Linux). It only ever grows, so a benchmark that
wants the peak of one configuration runs it in a fresh process (:func:`run_isolated`) and
reads the peak there.

Results: each script prints a table (:func:`format_table`) and writes one JSON file
(:func:`write_results`, atomic) holding the machine (:func:`machine_info`: CPU model from
``/proc/cpuinfo``, cores, load average, memory, TensorFlow/Keras versions, GPUs, git commit),
the arguments, one dict per measured configuration ("rows") and notes. When an earlier results
file is given (or ``--out`` exists and ``--overwrite`` replaces it), each row's headline figure is
compared with the earlier run's row of the same configuration (:func:`compare_with_previous`).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

MIN_ITERATIONS = 10
"""Timed iterations a full (not ``--quick``) measurement needs at least."""
QUICK_ITERATIONS = 2
QUICK_WARMUP = 1
RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Default folder of the results files: ``benchmarks/results/<name>.json``."""
REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- timing

@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each timed call, in call order, after ``warmup`` untimed calls."""

    samples: tuple[float, ...]
    warmup: int = 0

    def __post_init__(self):
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return float(statistics.median(self.samples))

    @property
    def mean(self) -> float:
        return float(statistics.fmean(self.samples))

    @property
    def minimum(self) -> float:
        return float(min(self.samples))

    @property
    def maximum(self) -> float:
        return float(max(self.samples))

    def per_second(self, items_per_call: float) -> float:
        """Throughput at the median: ``items_per_call / median`` (``inf`` for a zero median)."""
        return items_per_call / self.median if self.median > 0 else math.inf

    def as_dict(self) -> dict:
        """Seconds: median, mean, min, max, the samples; and the warm-up count."""
        return {"median_s": self.median, "mean_s": self.mean, "min_s": self.minimum,
                "max_s": self.maximum, "iterations": len(self.samples), "warmup": self.warmup,
                "samples_s": list(self.samples)}


def time_calls(fn: Callable[[], Any], *, iterations: int, warmup: int) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``iterations`` times, timing each call.

    ``fn`` must not return before its work is done (fetch a result to the host, e.g. with
    ``.numpy()``: TensorFlow on a GPU returns before the kernels finish).
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"need iterations >= 1 and warmup >= 0, got {iterations}, {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(tuple(samples), warmup)


def check_iterations(iterations: int, warmup: int, quick: bool,
                     few_allowed: bool = False) -> None:
    """Full runs time at least :data:`MIN_ITERATIONS` iterations (a median of fewer is noise),
    unless ``few_allowed`` (``--few-iterations``: configurations too slow to time ten of, whose
    rows then say so).

    Raises:
        CtmriInputError: too few iterations without ``--quick`` or ``few_allowed``, or a
            negative warm-up.
    """
    if warmup < 0:
        raise CtmriInputError(None, f"--warmup must be >= 0, got {warmup}")
    if iterations < 1 or (not (quick or few_allowed) and iterations < MIN_ITERATIONS):
        raise CtmriInputError(None, f"--iterations {iterations}: a measurement needs at least "
                                    f"{MIN_ITERATIONS} timed iterations (use --quick for a smoke "
                                    f"run, --few-iterations for a configuration too slow to "
                                    f"time ten of)")


# ----------------------------------------------------------------------------- memory

def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (``getrusage`` ``ru_maxrss``,
    reported in KiB on Linux and in bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss_children_bytes() -> int:
    """Largest peak resident set size among the finished child processes this process has
    waited for (``RUSAGE_CHILDREN``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def format_bytes(size: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"`` (binary units)."""
    if size is None or (isinstance(size, float) and math.isnan(size)):
        return "-"
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"


def run_isolated(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh Python process (``spawn``); return its result.

    Each configuration then starts from nothing: its own peak RSS, no TensorFlow graphs, Keras
    dtype policy or thread pools left over from the previous one. ``fn`` must be a module-level
    function of an importable module and its arguments and result picklable; an exception in
    the child is raised here.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# ----------------------------------------------------------------------------- the machine

def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_total_bytes() -> int | None:
    """Physical memory from ``/proc/meminfo`` (``MemTotal``), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def git_commit(root: str | os.PathLike = REPO_ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout (read-only git)."""
    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True,
                                  timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or None, "dirty": None if status is None else bool(status)}


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes), or None where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """Where the numbers were measured: CPU model, cores, load, memory, Python, TensorFlow,
    Keras, GPUs, the git commit and the time (UTC)."""
    import keras
    import tensorflow as tf

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": load_average(),
        "memory_total_bytes": memory_total_bytes(),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "git": git_commit(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_warning(info: Mapping) -> str | None:
    """A sentence when the 1-minute load average exceeds the usable cores (others were busy
    too: the figures are pessimistic), else None."""
    load, cores = info.get("load_average"), info.get("usable_cores")
    if load and cores and load[0] > cores:
        return (f"the machine was loaded (1-min load average {load[0]:.1f} on {cores} cores): "
                f"figures are slower than on an idle machine")
    return None


# ----------------------------------------------------------------------------- tables

@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: the row key, its header and how to format a value."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = "{}"

    def cell(self, row: Mapping) -> str:
        value = row.get(self.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if callable(self.fmt):
            return self.fmt(value)
        return self.fmt.format(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[Column]) -> str:
    """A plain-text table (Markdown pipe syntax, columns padded to their widest cell)."""
    cells = [[c.header for c in columns]] + [[c.cell(row) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(values) for values in cells[1:])])


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def change(value: float) -> str:
    """A relative change as ``+12.3 %``."""
    return f"{100 * value:+.1f} %"


# ----------------------------------------------------------------------------- JSON

def _json_safe(value):
    """JSON has no infinity or NaN: ``inf`` -> ``"inf"``, NaN -> ``null``; tuples -> lists."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return _json_safe(value.item())
    return value


def default_out(name: str) -> Path:
    """``benchmarks/results/<name>.json``."""
    return RESULTS_DIR / f"{name}.json"


def check_out(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse, before measuring anything, to replace an existing results file unasked.

    Raises:
        CtmriInputError: ``path`` exists and not ``overwrite``, or is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise CtmriInputError(path, "is a folder; --out must name a .json file")
    if path.exists() and not overwrite:
        raise CtmriInputError(path, "results file already exists; pass --overwrite to replace "
                                    "it (the new figures are compared with it first) or choose "
                                    "another --out")
    return path


def read_results(path: str | os.PathLike) -> dict:
    """A results file written by :func:`write_results`.

    Raises:
        CtmriInputError: unreadable, not JSON, or not a benchmark results file.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except OSError as err:
        raise CtmriInputError(path, f"cannot read the results file ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise CtmriInputError(path, f"not valid JSON ({err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise CtmriInputError(path, "not a benchmark results file (no \"rows\" list)")
    return payload


def write_results(path: str | os.PathLike, *, benchmark: str, arguments: Mapping, rows: list,
                  notes: Mapping | None = None, machine: Mapping | None = None,
                  overwrite: bool = False) -> Path:
    """Write the results JSON atomically: ``{"benchmark", "schema", "machine", "arguments",
    "rows", "notes"}`` (``inf`` as ``"inf"``, NaN as ``null``). Returns the path."""
    payload = {"benchmark": benchmark, "schema": SCHEMA_VERSION,
               "machine": dict(machine) if machine is not None else machine_info(),
               "arguments": dict(arguments), "rows": rows, "notes": dict(notes or {})}
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    return path


def arguments_dict(args: argparse.Namespace) -> dict:
    """The parsed arguments as JSON-ready values."""
    return _json_safe({k: v for k, v in vars(args).items()})


def row_key(row: Mapping, fields: Iterable[str]) -> tuple:
    return tuple(json.dumps(_json_safe(row.get(field)), sort_keys=True) for field in fields)


def compare_with_previous(rows: list[dict], previous: Mapping | None, *, key_fields: Sequence[str],
                          metric: str, higher_is_better: bool) -> None:
    """Annotate each row with the earlier run's ``metric`` for the same configuration.

    Rows whose ``key_fields`` equal an earlier row's get ``previous_<metric>`` and
    ``change_vs_previous``: the relative change of the headline figure, signed so that positive
    means better (faster, more throughput): ``new / old - 1`` when higher is better, ``old /
    new - 1`` otherwise.
    """
    if not previous:
        return
    earlier = {row_key(row, key_fields): row for row in previous.get("rows", [])
               if isinstance(row, Mapping)}
    for row in rows:
        old = earlier.get(row_key(row, key_fields), {}).get(metric)
        new = row.get(metric)
        if not isinstance(old, (int, float)) or not isinstance(new, (int, float)) or not (
                old > 0 and new > 0) or math.isinf(old) or math.isinf(new):
            continue
        row[f"previous_{metric}"] = float(old)
        row["change_vs_previous"] = (new / old - 1.0) if higher_is_better else (old / new - 1.0)


# ----------------------------------------------------------------------------- command lines

def add_output_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out``, ``--overwrite``, ``--compare`` and ``--quick``, shared by every script."""
    parser.add_argument("--out", type=Path, default=default_out(name),
                        help=f"results JSON (default: benchmarks/results/{name}.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (its figures are compared with the new "
                             "ones first)")
    parser.add_argument("--compare", type=Path, default=None, metavar="EARLIER_JSON",
                        help="compare with this earlier results file (default: the --out being "
                             "replaced, if any)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiniest sizes, 2 iterations; checks the script works, "
                             "measures nothing meaningful")


def parse_choices(text: str, valid: Mapping[str, str], what: str) -> list[str]:
    """``"a,b"`` -> canonical names through ``valid`` (alias -> name), order kept, no repeats.

    Raises:
        CtmriInputError: an unknown name (the message lists the valid ones).
    """
    chosen: list[str] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        if item not in valid:
            raise CtmriInputError(None, f"unknown {what} {item!r}; valid: "
                                        f"{', '.join(sorted(valid))}")
        if valid[item] not in chosen:
            chosen.append(valid[item])
    if not chosen:
        raise CtmriInputError(None, f"no {what} given")
    return chosen


def parse_ints(text: str, what: str) -> list[int]:
    """``"1,32"`` -> ``[1, 32]`` (positive integers).

    Raises:
        CtmriInputError: not a comma-separated list of positive integers.
    """
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise CtmriInputError(None, f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise CtmriInputError(None, f"{what} must be positive integers, got {text!r}")
    return values


def previous_results(args: argparse.Namespace) -> dict | None:
    """The earlier results to compare with: ``--compare``, else the ``--out`` being replaced."""
    if args.compare is not None:
        return read_results(args.compare)
    if Path(args.out).is_file():
        return read_results(args.out)
    return None


def finish(args: argparse.Namespace, *, benchmark: str, rows: list[dict], columns: list[Column],
           notes: Mapping, machine: Mapping, previous: Mapping | None, key_fields: Sequence[str],
           metric: str, higher_is_better: bool, summary: Sequence[str] = ()) -> Path:
    """Compare with the earlier run, print the table and the summary lines, write the JSON."""
    compare_with_previous(rows, previous, key_fields=key_fields, metric=metric,
                          higher_is_better=higher_is_better)
    if any("change_vs_previous" in row for row in rows):
        columns = [*columns, Column("change_vs_previous", "vs last", change)]
    print(format_table(rows, columns))
    machine = {**machine, "load_average_end": load_average()}
    lines = list(summary)
    warning = load_warning(machine)
    if warning:
        lines.append(f"note: {warning}")
    for line in lines:
        print(line)
    path = write_results(args.out, benchmark=benchmark, arguments=arguments_dict(args), rows=rows,
                         notes={**notes, "summary": lines}, machine=machine,
                         overwrite=args.overwrite)
    print(f"wrote {path}")
    return path


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run a script's body; bad input ends with ``error: <path>: <problem>`` and status 2."""
    try:
        return main(argv)
    except CtmriInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
