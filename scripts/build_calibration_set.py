"""Write the precision-check calibration images (predictor/calibration/*.jpg) from scikit-image's samples.

Only samples that scikit-image documents as public domain or CC0 are used. Each is stored as a JPEG
(quality 90) with its shorter side at most 320 pixels: enough for inputs up to 320x320 and small in
the package (~0.4 MB). The first four (real objects: chelsea, coffee, rocket, astronaut) are the
"photos" of the accuracy rule; the rest are textures, scans, microscopy and text, where models are
unsure. Run: ``python scripts/build_calibration_set.py`` (needs the dev dependencies).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "predictor" / "calibration"
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
OTHERS = (
    "brick camera clock coins grass gravel horse hubble_deep_field immunohistochemistry retina text cell microaneurysms"
).split()
SHORT_SIDE = 320


def main() -> int:
    from skimage import data

    sys.path.insert(0, str(ROOT))
    from bench.payloads import as_rgb

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    for i, name in enumerate((*PHOTOS, *OTHERS)):
        img = Image.fromarray(as_rgb(getattr(data, name)()), "RGB")
        scale = SHORT_SIDE / min(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        kind = "photo" if name in PHOTOS else "other"
        img.save(OUT / f"{i:02d}-{kind}-{name}.jpg", format="JPEG", quality=90)
    total = sum(p.stat().st_size for p in OUT.glob("*.jpg"))
    print(f"wrote {len(PHOTOS) + len(OTHERS)} images, {total / 1024:.0f} KiB, to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
