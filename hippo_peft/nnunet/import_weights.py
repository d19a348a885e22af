"""`hippo-peft import-weights`: a foreign checkpoint -> an nnU-Net-style file for ``-pretrained_weights``."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from hippo_peft.atomic import atomic_file
from hippo_peft.errors import InputError, MissingInputError, OutputExistsError
from hippo_peft.networks import arch_for_class_name
from hippo_peft.nnunet.plans import network_io
from hippo_peft.nnunet.weights import LoadReport, read_state_dict, transfer_weights

logger = logging.getLogger(__name__)


def network_from_plans(plans_file: str | Path, configuration: str = "3d_fullres", dataset_json: dict | None = None):
    """Build the (randomly initialised) network a hippo_peft plans file describes. Returns (network, in_channels)."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json

    from hippo_peft.networks import build_network

    plans_file = Path(plans_file)
    if not plans_file.is_file():
        raise MissingInputError(f"Plans file not found: {plans_file}")
    dataset_json = dataset_json or load_json(join(plans_file.parent, "dataset.json"))
    _, cm, in_channels, out_channels = network_io(plans_file, dataset_json, configuration)
    if arch_for_class_name(cm.network_arch_class_name) is None:
        raise InputError(f"{plans_file} configuration '{configuration}' uses {cm.network_arch_class_name}, not a "
                         f"hippo_peft network. Plan the dataset with `hippo-peft plan -d ... --arch unetr|swinunetr`.")
    net = build_network(cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.patch_size, in_channels,
                        out_channels)
    return net, in_channels


def import_weights(source: str | Path, plans_file: str | Path, output: str | Path, configuration: str = "3d_fullres",
                   min_fraction: float = 0.5, overwrite: bool = False, trust_pickle: bool = False) -> LoadReport:
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it. Nothing was written.")
    net, in_channels = network_from_plans(plans_file, configuration)
    report = transfer_weights(net, read_state_dict(source, trust_pickle), in_channels, min_fraction)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as tmp:
        torch.save({"network_weights": net.state_dict(),
                    "hippo_peft_import": {"source": str(source), "plans": str(plans_file), **report.to_dict()}}, tmp)
    logger.info(report.format())
    logger.info(f"Wrote {output}; use it with nnUNetv2_train ... -pretrained_weights {output}")
    return report


def convert_weights(source: str | Path, output: str | Path, trust_pickle: bool = False,
                    overwrite: bool = False) -> Path:
    """A trusted research checkpoint -> a plain ``.safetensors`` file of its state dict (wrappers and ``module.`` /
    ``_orig_mod.`` prefixes removed), which every hippo_peft command and trainer then loads without opt-in.

    Args:
        source: the checkpoint; pickled extras (``argparse.Namespace``, whole modules) need ``trust_pickle``.
        output: a ``.safetensors`` file, written atomically (a temporary file beside it, then renamed).
        trust_pickle: unpickle without the allow-list: only for a file whose origin you trust.
        overwrite: replace an existing ``output``.
    """
    from safetensors.torch import save_file
    output = Path(output)
    if output.suffix != ".safetensors":
        raise InputError(f"{output}: the converted file must end in .safetensors. Nothing was written.")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it. Nothing was written.")
    state = read_state_dict(source, trust_pickle)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as tmp:  # safetensors wants contiguous tensors that share no memory
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"converted_from": Path(source).name, "by": "hippo-peft convert-weights"})
    logger.info(f"Wrote {output}: {len(state)} tensors, {sum(v.numel() for v in state.values()):,} numbers. Use "
                f"it anywhere a checkpoint is asked for (-pretrained_weights, import-weights, apply-adapter --base).")
    return output
