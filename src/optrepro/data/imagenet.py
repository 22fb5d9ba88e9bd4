"""ImageNet-1k from a directory the user supplies (it cannot be downloaded: its terms need an account).

Expected layout (torchvision ImageFolder, as most ImageNet preparation scripts leave it):

    <imagenet_dir>/train/n01440764/*.JPEG   1000 class folders named by WordNet id
    <imagenet_dir>/val/n01440764/*.JPEG     the same 1000 folders (validation images sorted into classes)

`verify_imagenet(dir)` checks that layout and fails with a message naming the config key and how to turn
the ImageNet experiments off. With `root`, it also writes the file index (paths and labels) to
<root>/imagenet/prepared/ and the marker <root>/imagenet/.verified, which `load_arrays("imagenet")` reads.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from optrepro.data.sources import IMAGENET_CONFIG_KEY

N_CLASSES = 1000
WNID = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class ImageNetNotFoundError(FileNotFoundError):
    pass


def _how_to_fix(problem: str) -> str:
    return (f"ImageNet: {problem}.\n"
            f"Set `{IMAGENET_CONFIG_KEY}:` in config/config.yaml (top level) to a directory holding train/<wnid>/ "
            f"and val/<wnid>/ with {N_CLASSES} class folders each (torchvision ImageFolder layout). "
            "ImageNet cannot be downloaded automatically. To run without it, remove the papers that need it "
            "(alsals, fuzzy) from the config `papers:` list, or set the ImageNet experiment's enable flag to "
            "false in config/papers/<paper>.yaml.")


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and WNID.match(entry.name))


def verify_imagenet(directory: str | Path | None, root: str | Path | None = None) -> dict[str, int]:
    """Check a user-supplied ImageNet directory; return image counts {"train": n, "val": m}.

    Raises ImageNetNotFoundError (a FileNotFoundError) naming `imagenet_dir` when the directory is unset,
    missing or malformed. With `root`, writes the file index and the verified marker under <root>/imagenet.
    """
    if directory is None or str(directory).strip() in ("", "null", "None"):
        raise ImageNetNotFoundError(_how_to_fix(f"config key {IMAGENET_CONFIG_KEY} is not set"))
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ImageNetNotFoundError(_how_to_fix(f"{IMAGENET_CONFIG_KEY}={directory} is not a directory"))
    index: dict[str, tuple[list[str], list[int]]] = {}
    classes: list[str] | None = None
    for split in ("train", "val"):
        split_dir = directory / split
        if not split_dir.is_dir():
            raise ImageNetNotFoundError(_how_to_fix(f"{split_dir} is missing ({IMAGENET_CONFIG_KEY}={directory})"))
        found = _class_dirs(split_dir)
        if len(found) != N_CLASSES:
            raise ImageNetNotFoundError(_how_to_fix(
                f"{split_dir} has {len(found)} class folders named like n01440764, expected {N_CLASSES} "
                f"({IMAGENET_CONFIG_KEY}={directory})"))
        if classes is not None and found != classes:
            raise ImageNetNotFoundError(_how_to_fix(f"train/ and val/ hold different class folders in {directory}"))
        classes = found
        paths, labels = [], []
        for label, wnid in enumerate(found):
            images = sorted(e.name for e in os.scandir(split_dir / wnid)
                            if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
            if not images:
                raise ImageNetNotFoundError(_how_to_fix(f"class folder {split_dir / wnid} holds no images"))
            paths += [str(split_dir / wnid / name) for name in images]
            labels += [label] * len(images)
        index[split] = (paths, labels)
    if root is not None:
        _write_index(Path(root), index, classes, directory)
    return {split: len(paths) for split, (paths, _) in index.items()}


def _write_index(root: Path, index, classes, directory: Path) -> None:
    from optrepro.data.arrays import ArrayWriter
    from optrepro.data.layout import marker_path, prepared_dir
    from optrepro.io import atomic_write_json

    target = prepared_dir(root, "imagenet")
    target.mkdir(parents=True, exist_ok=True)
    marker_path(root, "imagenet").unlink(missing_ok=True)
    writer = ArrayWriter(target)
    for split, (paths, labels) in index.items():
        writer.save(f"{split}_paths", np.array(paths))
        writer.save(f"{split}_labels", np.array(labels, dtype=np.int64))
    writer.save("classes", np.array(classes))
    atomic_write_json(target / "manifest.json", writer.entries)
    atomic_write_json(marker_path(root, "imagenet"), {
        "source": "imagenet", "directory": str(directory.resolve()),
        "images": {split: len(paths) for split, (paths, _) in index.items()}})
