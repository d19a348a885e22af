"""Experiment planner for hippo_peft's transformer backbones.

nnU-Net decides spacing, normalisation, resampling and an initial patch size exactly as for its own U-Net
(we call its planner); we then swap in our network, round the patch size to the backbone's divisor (or take
the user's), and keep only ``3d_fullres`` (both backbones are 3D). Custom ``-pl`` planners cannot be found
outside the nnunetv2 package, so ``hippo-peft plan`` drives this class.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.paths import nnUNet_preprocessed

from hippo_peft.errors import HippoPeftError, InputError
from hippo_peft.networks.presets import get_arch, get_preset
from hippo_peft.nnunet.plans import make_configuration

logger = logging.getLogger(__name__)

STOCK_PLANS = "nnUNetPlans"
# keys of a configuration that decide what the preprocessed data look like
PREPROCESSING_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                      "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs", "preprocessor_name")


def default_plans_name(arch: str, preset: str) -> str:
    return f"nnUNetPlans_{get_arch(arch).plans_suffix}_{preset}"


class PlansExistError(HippoPeftError, FileExistsError):
    pass


class nnUNetPlannerTransformer(ExperimentPlanner):
    """Plans ``3d_fullres`` for MONAI UNETR / SwinUNETR.

    Args:
        dataset_name_or_id: nnU-Net dataset.
        arch: ``unetr`` or ``swinunetr``.
        preset: ``paper``, ``compact`` or ``tiny``.
        patch_size: explicit patch size (must be divisible: 16 for UNETR, 32 for SwinUNETR); by default nnU-Net's
            planned patch size rounded up. For transfer with UNETR, pass the source's patch size.
        plans_name: defaults to ``nnUNetPlans_<ARCH>_<preset>``.
        overwrite: replace an existing plans file of that name (otherwise refused).
    """

    def __init__(self, dataset_name_or_id, arch: str, preset: str, patch_size: Sequence[int] | None = None,
                 plans_name: str | None = None, overwrite: bool = False, gpu_memory_target_in_gb: float = 8):
        self.arch = get_arch(arch)
        get_preset(arch, preset)  # validate early
        self.preset = preset
        self.requested_patch_size = patch_size
        self.overwrite = overwrite
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb=gpu_memory_target_in_gb,
                         plans_name=plans_name or default_plans_name(arch, preset))
        if self.plans_identifier == STOCK_PLANS:
            raise InputError(f"Refusing to write our plans as '{STOCK_PLANS}' (nnU-Net's own plans). Pick another "
                             f"--plans-name.")
        if isfile(self.plans_file) and not overwrite:
            raise PlansExistError(f"{self.plans_file} already exists. Pass --overwrite to replace it or --plans-name "
                                  f"to write another file; nothing was changed.")

    @property
    def plans_file(self) -> str:
        return join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json")

    def generate_data_identifier(self, configuration_name: str) -> str:
        # Preprocessing depends on spacing and normalisation only, which nnU-Net decides as for its own plans:
        # share its preprocessed folder instead of writing the same arrays twice (checked in save_plans).
        return f"{STOCK_PLANS}_{configuration_name}"

    def _stock_preprocessing_matches(self, config: dict) -> bool:
        stock_file = join(nnUNet_preprocessed, self.dataset_name, STOCK_PLANS + ".json")
        if not isfile(stock_file):
            return True  # nobody else writes that folder yet; ours will be identical to what nnU-Net would write
        stock = load_json(stock_file)["configurations"].get("3d_fullres")
        return stock is not None and all(stock.get(k) == config.get(k) for k in PREPROCESSING_KEYS)

    def save_plans(self, plans):
        if "3d_fullres" not in plans["configurations"]:
            raise InputError(f"{self.dataset_name} is not 3D (nnU-Net planned no 3d_fullres configuration); "
                             f"{self.arch.network_class_name} needs 3D images.")
        config = make_configuration(plans["configurations"]["3d_fullres"], self.arch.name, self.preset,
                                    self.requested_patch_size)
        from nnunetv2.utilities.json_export import recursive_fix_for_json_export
        recursive_fix_for_json_export(config)
        if not self._stock_preprocessing_matches(config):
            config["data_identifier"] = f"{self.plans_identifier}_3d_fullres"
        plans["configurations"] = {"3d_fullres": config}
        # Not nnU-Net's save_plans: it merges an existing file's other configurations back in (we refuse an existing
        # file, or replace it whole with --overwrite) and writes in place; ours is written atomically.
        from batchgenerators.utilities.file_and_folder_operations import maybe_mkdir_p, save_json

        from hippo_peft.atomic import atomic_file
        recursive_fix_for_json_export(plans)
        maybe_mkdir_p(os.path.dirname(self.plans_file))
        with atomic_file(self.plans_file) as tmp:
            save_json(plans, str(tmp), sort_keys=False)
        logger.info(f"Plans were saved to {self.plans_file}")
