"""Small synthetic chest-X-ray-like data sets in the layouts the notebook must handle."""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def film(label, rng):
    """A 64x64 gray 'film': dark lungs for NORMAL (0), bright patchy lungs for PNEUMONIA (1)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    image = 90 + 60 * np.exp(-((x - 0.5) ** 2) / 0.02) + rng.normal(0, 12, (SIZE, SIZE))
    if label:
        for _ in range(3):
            cy = rng.uniform(0.3, 0.7)
            cx = rng.choice([rng.uniform(0.2, 0.35), rng.uniform(0.65, 0.8)])
            image += 90 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.008)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_split(split_dir, patients, images_per_patient, rng, first_patient, class_case=str.upper):
    """Write NORMAL and PNEUMONIA films named with patient ids, as the real data is."""
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        folder = split_dir / class_case(name)
        folder.mkdir(parents=True, exist_ok=True)
        for patient in range(first_patient, first_patient + patients):
            for image in range(images_per_patient):
                if label:
                    kind = "bacteria" if patient % 2 else "virus"
                    file_name = f"person{patient}_{kind}_{patient * 10 + image}.jpeg"
                else:
                    file_name = f"IM-{patient:04d}-{image + 1:04d}.jpeg"
                Image.fromarray(film(label, rng)).save(folder / file_name, quality=90)


def make_tree(
    root,
    train_patients=10,
    test_patients=5,
    images_per_patient=2,
    val=False,
    seed=0,
    class_case=str.upper,
):
    """A plain train/ and test/ tree (optionally with a small val/) under root; returns root."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    write_split(root / "train", train_patients, images_per_patient, rng, 1, class_case)
    write_split(root / "test", test_patients, images_per_patient, rng, 1000, class_case)
    if val:
        write_split(root / "val", 2, 1, rng, 2000, class_case)
    return root


def count_images(split_dir):
    return sum(1 for path in Path(split_dir).rglob("*.jpeg"))
