"""Write ``dummy_data/``: the tiny ``manual_dir`` used by ``ctmri_dataset_builder_test.py``.

Run once from the repository root (the output is committed)::

    python -m datasets.ctmri.make_dummy_data [--out datasets/ctmri/dummy_data]

Layout (32 x 32 px, 3 slices per volume, 16-bit PNG; CT stores HU + 1024, MRI raw signal)::

    ct/s01/   slice_1..3.png + slice_1..3.json  (Labelme polygons around the head)
    mri/s01/  slice_1..3.png                    (automatic mask)   -> s01 is a registered pair
    ct/s02/   slice_1..3.png                    (automatic mask)
    mri/s02/  slice_1..3.png + masks/slice_1..3.png                 -> s02 is a registered pair
    ct/s03/   slice_1..3.png                    (CT only)
    mri/s04/  slice_1..3.png                    (MRI only)

Splits (sorted ids, 80/10/10 with at least one each): train s01, s02 (12 slices), validation s03
(3), test s04 (3).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from ctmri_tf.atomic import atomic_output

SIZE = 32
SLICES = 3
# Tissue values of the little head: (CT in HU, MRI signal)
AIR = (-1000.0, 0.0)
BONE = (1200.0, 40.0)
BRAIN = (35.0, 700.0)


def head(index: int, slice_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A (CT HU, MRI signal) 32 x 32 slice: an ellipse of brain inside a ring of bone."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    centre_r, centre_c = 15.5 + (index % 2), 15.5 - (index % 3)
    radius = 11.0 - slice_index
    distance = np.hypot((rows - centre_r) / 1.15, cols - centre_c)
    ct = np.full((SIZE, SIZE), AIR[0])
    mri = np.full((SIZE, SIZE), AIR[1])
    ct[distance <= radius], mri[distance <= radius] = BONE
    inside = distance <= radius - 2
    ct[inside], mri[inside] = BRAIN
    mri[inside] += 10.0 * index + 5.0 * slice_index   # each slice its own signal
    return ct, mri


def _png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"OpenCV could not write {path}")


def _labelme(path: Path, image_name: str, polygon: list[list[float]]) -> None:
    document = {"version": "5.5.0", "flags": {}, "imagePath": image_name, "imageData": None,
                "imageHeight": SIZE, "imageWidth": SIZE,
                "shapes": [{"label": "body", "points": polygon, "group_id": None,
                            "description": "", "shape_type": "polygon", "flags": {},
                            "mask": None}]}
    path.write_text(json.dumps(document, indent=1))


def write_dummy_data(out: Path) -> None:
    """Write the layout described in the module docstring into the new folder ``out``."""
    volumes = {("ct", "s01"): 1, ("mri", "s01"): 1, ("ct", "s02"): 2, ("mri", "s02"): 2,
               ("ct", "s03"): 3, ("mri", "s04"): 4}
    for (modality, subject), index in volumes.items():
        folder = out / modality / subject
        folder.mkdir(parents=True)
        for k in range(SLICES):
            ct, mri = head(index, k)
            name = f"slice_{k + 1}"
            stored = np.rint(ct + 1024.0) if modality == "ct" else np.rint(mri)
            _png(folder / f"{name}.png", stored.astype(np.uint16))
            if (modality, subject) == ("ct", "s01"):
                half = 11.0 - k
                box = [[15.5 - half, 15.5 - half * 1.15], [15.5 + half, 15.5 - half * 1.15],
                       [15.5 + half, 15.5 + half * 1.15], [15.5 - half, 15.5 + half * 1.15]]
                _labelme(folder / f"{name}.json", f"{name}.png", box)
            if (modality, subject) == ("mri", "s02"):
                (folder / "masks").mkdir(exist_ok=True)
                _png(folder / "masks" / f"{name}.png", ((ct > -500) * 255).astype(np.uint8))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("dummy_data"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and args.overwrite:
        shutil.rmtree(args.out)
    with atomic_output(args.out, directory=True) as tmp:
        write_dummy_data(tmp)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
