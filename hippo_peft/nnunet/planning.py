"""`hippo-peft plan`: nnU-Net fingerprint -> our planner -> nnU-Net preprocessing (reused when already there)."""
from __future__ import annotations

import logging
import os
from typing import Sequence

from hippo_peft.nnunet.env import require_nnunet_paths

logger = logging.getLogger(__name__)


def _preprocessed_complete(dataset_name: str, data_identifier: str) -> bool:
    from batchgenerators.utilities.file_and_folder_operations import isdir, join, load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = join(nnUNet_preprocessed, dataset_name, data_identifier)
    if not isdir(folder) or not isdir(join(nnUNet_preprocessed, dataset_name, "gt_segmentations")):
        return False
    raw = join(nnUNet_raw, dataset_name)
    wanted = set(get_filenames_of_train_images_and_targets(raw, load_json(join(raw, "dataset.json"))))
    try:
        have = set(infer_dataset_class(folder).get_identifiers(folder))
    except Exception:  # empty or foreign folder: let nnU-Net rewrite it
        return False
    return wanted <= have


def plan_dataset(dataset: str | int, arch: str, preset: str, patch_size: Sequence[int] | None = None,
                 plans_name: str | None = None, overwrite: bool = False, num_processes: int = 2,
                 preprocess: bool = True, verify: bool = True) -> str:
    """Plan (and preprocess) ``3d_fullres`` of an nnU-Net raw dataset for one of our backbones.

    Returns the plans name to pass to nnU-Net's ``-p``.
    """
    require_nnunet_paths("nnUNet_raw", "nnUNet_preprocessed")
    from batchgenerators.utilities.file_and_folder_operations import isfile, join
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name

    from hippo_peft.planners import nnUNetPlannerTransformer

    dataset_name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    dataset_id = convert_dataset_name_to_id(dataset_name)
    if not isfile(join(nnUNet_preprocessed, dataset_name, "dataset_fingerprint.json")):
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=verify,
                                    clean=True, verbose=False)
    planner = nnUNetPlannerTransformer(dataset_id, arch, preset, patch_size=patch_size, plans_name=plans_name,
                                       overwrite=overwrite)
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which crashes for the (valid, single-process
    # augmentation) value 0; the thread count only matters for its memory estimate.
    saved = os.environ.get("nnUNet_n_proc_DA")
    if saved is not None and saved.strip() == "0":
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        plans = planner.plan_experiment()
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved
    name = planner.plans_identifier
    config = plans["configurations"]["3d_fullres"]
    logger.info(f"{name}: {config['architecture']['network_class_name']} preset '{preset}', patch size "
                f"{config['patch_size']} (nnU-Net planned {config['hippo_peft']['planned_patch_size']}), batch size "
                f"{config['batch_size']}, data '{config['data_identifier']}'")
    if preprocess:
        if _preprocessed_complete(dataset_name, config["data_identifier"]):
            logger.info(f"Reusing preprocessed data in "
                        f"{join(nnUNet_preprocessed, dataset_name, config['data_identifier'])} (same spacing and "
                        f"normalisation).")
        else:
            preprocess_dataset(dataset_id, name, ["3d_fullres"], [num_processes])
    return name

