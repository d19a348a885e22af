"""nnU-Net raw datasets made of symlinks to another raw dataset's cases (a user's data are never copied): used by the
benchmark, the demo and the tests."""
from __future__ import annotations

import json
from pathlib import Path


def link_cases(raw: Path, folder: Path, cases: list[str], split: str = "Tr", labels: bool = True,
               labels_dir: str | None = None, dataset_json: dict | None = None) -> None:
    """Link ``cases`` of the nnU-Net raw dataset ``raw`` into ``folder``.

    Args:
        raw: an nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``, maybe ``imagesTs``).
        folder: the dataset folder to fill; ``images<split>`` (and the label folder) are made when missing.
        cases: case ids; a case is looked for in ``imagesTr``, then in ``imagesTs`` (unlabelled cases).
        split: ``"Tr"`` or ``"Ts"``.
        labels: also link each case's label map from ``raw/labelsTr``.
        labels_dir: the label folder's name in ``folder`` (default ``labels<split>``).
        dataset_json: ``raw``'s dataset.json when already read (channels and file ending come from it).
    """
    dataset_json = dataset_json or json.loads((Path(raw) / "dataset.json").read_text())
    raw, folder = Path(raw), Path(folder)
    ending, channels = dataset_json["file_ending"], len(dataset_json["channel_names"])
    images, label_folder = folder / f"images{split}", folder / (labels_dir or f"labels{split}")
    images.mkdir(parents=True, exist_ok=True)
    if labels:
        label_folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        source = raw / "imagesTr"
        if not (source / f"{case}_0000{ending}").exists() and (raw / "imagesTs" / f"{case}_0000{ending}").exists():
            source = raw / "imagesTs"
        for c in range(channels):
            (images / f"{case}_{c:04d}{ending}").symlink_to((source / f"{case}_{c:04d}{ending}").resolve())
        if labels:
            (label_folder / f"{case}{ending}").symlink_to((raw / "labelsTr" / f"{case}{ending}").resolve())
