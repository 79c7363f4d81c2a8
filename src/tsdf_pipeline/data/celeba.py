"""Reader of the official CelebA folder layout (our own: torchvision's ``CelebA`` md5-checks the files).

Layout (the official ``img_align_celeba`` release)::

    <root>/img_align_celeba/000001.jpg ...   178x218 aligned crops
    <root>/list_attr_celeba.txt              line 1: image count; line 2: the 40 attribute names;
                                             then "<name> v1 .. v40" with values in {1, -1}
    <root>/list_eval_partition.txt           optional: "<name> <0|1|2>" (train / valid / test)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsdf_pipeline.data.attributes import CELEBA_ATTRS

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"

EXPECTED_LAYOUT = f"""expected the official CelebA layout:
  <root>/{IMAGE_DIR}/000001.jpg ...  (178x218 JPEG)
  <root>/{ATTR_FILE}       (line 1: count, line 2: 40 attribute names, then '<name> v1..v40' with ±1)
  <root>/{PARTITION_FILE}  (optional: '<name> <0|1|2>')"""


class CelebAFormatError(ValueError):
    """A CelebA file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class CelebAIndex:
    """The annotation files of one CelebA folder.

    ``names`` [N] image file names in file order; ``attrs`` [N,40] int8 in {-1, 1};
    ``partition`` [N] int8 in {0,1,2} or ``None`` when the partition file is absent.
    """

    root: Path
    names: list[str]
    attrs: np.ndarray
    partition: np.ndarray | None

    def __len__(self) -> int:
        return len(self.names)


def check_layout(root: str | Path) -> Path:
    """Return ``root`` as a Path after checking the folder, the image folder and the attribute file exist."""
    root = Path(root)
    for path, kind in ((root, "folder"), (root / IMAGE_DIR, "folder"), (root / ATTR_FILE, "file")):
        exists = path.is_dir() if kind == "folder" else path.is_file()
        if not exists:
            raise CelebAFormatError(f"CelebA {kind} not found: {path}\n{EXPECTED_LAYOUT}")
    return root


def read_attr_file(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` → (names [N], attrs [N,40] int8 in {-1,1}), streaming line by line."""
    path = Path(path)
    names: list[str] = []
    rows: list[np.ndarray] = []
    with path.open("r", encoding="utf-8") as f:
        first = f.readline()
        try:
            count = int(first.strip())
        except ValueError:
            raise CelebAFormatError(
                f"{path}:1: expected the image count (an integer), got {first.strip()[:80]!r}"
            ) from None
        header = f.readline().split()
        if tuple(header) != CELEBA_ATTRS:
            raise CelebAFormatError(
                f"{path}:2: expected the 40 CelebA attribute names in the official order "
                f"({' '.join(CELEBA_ATTRS[:3])} ... {CELEBA_ATTRS[-1]}), got {len(header)} names "
                f"({' '.join(header[:3])} ...)"
            )
        for lineno, line in enumerate(f, start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 41:
                raise CelebAFormatError(
                    f"{path}:{lineno}: expected an image name and 40 values, got {len(parts)} columns"
                )
            try:
                values = np.array([int(v) for v in parts[1:]], dtype=np.int8)
            except ValueError:
                raise CelebAFormatError(f"{path}:{lineno}: attribute values must be 1 or -1: {line.strip()[:120]!r}") from None
            bad = np.flatnonzero((values != 1) & (values != -1))
            if bad.size:
                raise CelebAFormatError(
                    f"{path}:{lineno}: attribute {CELEBA_ATTRS[bad[0]]} of {parts[0]} is {values[bad[0]]}, "
                    "expected 1 or -1"
                )
            names.append(parts[0])
            rows.append(values)
    if len(names) != count:
        raise CelebAFormatError(f"{path}:1: header says {count} images but the file lists {len(names)}")
    if len(set(names)) != len(names):
        raise CelebAFormatError(f"{path}: duplicate image names")
    attrs = np.stack(rows) if rows else np.zeros((0, 40), dtype=np.int8)
    return names, attrs


def read_partition_file(path: str | Path, names: list[str]) -> np.ndarray:
    """Parse ``list_eval_partition.txt`` → [N] int8 in {0,1,2}, aligned with ``names`` (checked line by line)."""
    path = Path(path)
    out = np.empty(len(names), dtype=np.int8)
    n = 0
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise CelebAFormatError(f"{path}:{lineno}: expected '<image name> <0|1|2>', got {line.strip()[:80]!r}")
            if n >= len(names) or parts[0] != names[n]:
                expected = names[n] if n < len(names) else "end of file"
                raise CelebAFormatError(
                    f"{path}:{lineno}: image {parts[0]} does not match row {n + 1} of {ATTR_FILE} ({expected})"
                )
            out[n] = int(parts[1])
            n += 1
    if n != len(names):
        raise CelebAFormatError(f"{path}: lists {n} images, {ATTR_FILE} lists {len(names)}")
    return out


def read_index(root: str | Path) -> CelebAIndex:
    """Read and validate the annotation files of a CelebA folder (images are not decoded here)."""
    root = check_layout(root)
    names, attrs = read_attr_file(root / ATTR_FILE)
    part_path = root / PARTITION_FILE
    partition = read_partition_file(part_path, names) if part_path.is_file() else None
    return CelebAIndex(root=root, names=names, attrs=attrs, partition=partition)
