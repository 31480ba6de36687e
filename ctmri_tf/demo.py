"""``make demo``: the project end to end on synthetic head phantoms, as a list of steps.

    python -m ctmri_tf.demo --data-dir artifacts/tensorflow_datasets --out artifacts/demo
                            [--config synthetic] [--num-subjects N --num-slices N --image-size N]

Steps (each a function of :class:`DemoRun`, run in order; later steps use what earlier ones put
in ``run.results``):

1. ``dataset``: build the tfds ``ctmri`` dataset (default config ``synthetic``: 40 phantoms x
   32 slices x 256 px; tfds' progress bars, then where it went and the slices/s);
2. ``contact sheet``: ``<out>/contact_sheet.png``, CT | MRI | body mask of slices spread over one
   test subject.

Outputs are replaced on a rerun (each written atomically).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from ctmri_tf import data, visualize
from ctmri_tf.errors import CtmriInputError
from datasets.ctmri import CtmriConfig
from datasets.ctmri.ctmri_dataset_builder import build, resolve_config

CONTACT_SHEET_ROWS = 6


@dataclasses.dataclass
class DemoRun:
    """The settings of one demo run and what its steps produced.

    Attributes:
        data_dir: tfds data folder.
        out: folder for the demo's outputs.
        config: the dataset config (name or :class:`CtmriConfig`).
        results: step name -> what the step produced (paths, reports).
    """

    data_dir: Path
    out: Path
    config: str | CtmriConfig = "synthetic"
    results: dict = dataclasses.field(default_factory=dict)

    @property
    def config_name(self) -> str:
        return self.config.name if isinstance(self.config, CtmriConfig) else str(self.config)


def build_dataset(run: DemoRun) -> None:
    """Build (or reuse) the dataset and print where it is and how fast it was generated."""
    print(f"[dataset] building ctmri/{run.config_name} in {run.data_dir} ...", flush=True)
    report = build(run.config, data_dir=run.data_dir)
    print(report.summary(), flush=True)
    run.results["dataset"] = report


def spread_slices(examples: list[dict], n: int) -> list[dict]:
    """``n`` paired CT examples of the first test subject, evenly spread over its slices."""
    paired = sorted((e for e in examples if e["modality"] == 0 and e["has_counterpart"]),
                    key=lambda e: (e["subject_id"], int(e["slice_index"])))
    if not paired:
        return []
    first = [e for e in paired if e["subject_id"] == paired[0]["subject_id"]]
    picks = np.unique(np.linspace(0, len(first) - 1, min(n, len(first))).round().astype(int))
    return [first[i] for i in picks]


def write_contact_sheet(run: DemoRun) -> None:
    """``<out>/contact_sheet.png``: CT | MRI | mask rows of one test subject."""
    examples = list(tfds.as_numpy(data.load("test", config=run.config, data_dir=run.data_dir)))
    rows = spread_slices(examples, CONTACT_SHEET_ROWS)
    if not rows:
        raise CtmriInputError(run.data_dir, f"ctmri/{run.config_name} has no paired CT/MRI "
                                            f"test slices for the contact sheet")
    path = visualize.contact_sheet(rows, run.out / "contact_sheet.png", n=CONTACT_SHEET_ROWS,
                                   overwrite=True)
    subject = rows[0]["subject_id"].decode()
    print(f"[contact sheet] {path} ({subject}, slices "
          f"{', '.join(str(int(e['slice_index'])) for e in rows)})", flush=True)
    run.results["contact sheet"] = path


STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("dataset", build_dataset),
    ("contact sheet", write_contact_sheet),
]


def run_demo(data_dir: str | os.PathLike, out: str | os.PathLike, *,
             config: str | CtmriConfig = "synthetic") -> DemoRun:
    """Run every step of :data:`STEPS` in order; returns the run with its results."""
    run = DemoRun(data_dir=Path(data_dir), out=Path(out), config=config)
    run.out.mkdir(parents=True, exist_ok=True)
    for _, step in STEPS:
        step(run)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctmri_tf.demo",
                                     description="Run the ctmri-tf demo on synthetic phantoms.")
    parser.add_argument("--data-dir", type=Path, required=True, help="tfds data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the demo outputs")
    parser.add_argument("--config", default="synthetic",
                        help="dataset config (default synthetic: 40 x 32 x 256 px)")
    parser.add_argument("--num-subjects", type=int, help="override: phantom subjects")
    parser.add_argument("--num-slices", type=int, help="override: slices per subject")
    parser.add_argument("--image-size", type=int, help="override: pixels per side")
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args.config, num_subjects=args.num_subjects,
                                num_slices=args.num_slices, image_size=args.image_size)
        run = run_demo(args.data_dir, args.out, config=config)
    except CtmriInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"demo outputs in {run.out.resolve()}:")
    for name, result in run.results.items():
        where = result.data_path if hasattr(result, "data_path") else result
        print(f"  {name}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
