"""`hippo-peft import-weights`: a foreign checkpoint -> an nnU-Net-style file for ``-pretrained_weights``."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from hippo_peft.atomic import atomic_file
from hippo_peft.errors import InputError, MissingInputError, OutputExistsError
from hippo_peft.networks import arch_for_class_name
from hippo_peft.nnunet.plans import network_io
from hippo_peft.nnunet.weights import (LoadReport, is_head_key, is_region_labels, parse_source_labels,
                                       read_source, read_state_dict, transfer_weights)

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
                   overwrite: bool = False, trust_pickle: bool = False, source_labels: str | None = None) -> LoadReport:
    """A foreign checkpoint -> a ``-pretrained_weights`` file for the network a hippo_peft plans file describes.

    Args:
        source: the checkpoint (see :func:`hippo_peft.nnunet.weights.read_state_dict` for the layouts read).
        plans_file: the target's plans; the target's classes come from the ``dataset.json`` beside it.
        output: the file to write (atomically); where the head came from the source it records the target's
            classes, so that a trainer loading it takes that head as it is.
        source_labels: the source head's classes in row order, background first (``"background,hippocampus"``),
            for a file that does not record them.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it. Nothing was written.")
    dataset_json = load_json(str(Path(plans_file).parent / "dataset.json")) if Path(plans_file).is_file() else None
    net, in_channels = network_from_plans(plans_file, configuration, dataset_json)
    weights = read_source(source, trust_pickle)
    if source_labels is not None:
        given = parse_source_labels(source_labels)
        if weights.labels is not None and {k.casefold(): v for k, v in weights.labels.items()} != \
                {k.casefold(): v for k, v in given.items()}:
            raise InputError(f"{source} records its classes ({weights.labels_from}: {weights.labels}), which differ "
                             f"from --source-labels {source_labels}. Omit --source-labels. Nothing was written.")
        rows = sorted({v.shape[0] for k, v in weights.state.items() if is_head_key(k) and v.ndim > 1})
        if len(given) not in rows:
            raise InputError(f"--source-labels {source_labels} names {len(given)} classes, but {source}'s head has "
                             + (f"{' / '.join(map(str, rows))} rows" if rows else "no segmentation head (an "
                                "encoder-only file: omit --source-labels)") + ". Nothing was written.")
        weights.labels, weights.regions, weights.labels_from = given, False, "--source-labels"
    target_labels = dataset_json["labels"]
    regions = bool(dataset_json.get("regions_class_order")) or is_region_labels(target_labels)
    report = transfer_weights(net, weights, in_channels, target_labels, regions)
    # the target's classes are recorded only for a head that came from the source: a trainer then takes it as it is;
    # a fresh head (random numbers of this command) stays unknown, so that the trainer starts its own fresh one
    head_from_source = bool(report.head) and not any(line.startswith("left fresh:") for line in report.head)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as tmp:
        torch.save({"network_weights": net.state_dict(),
                    "hippo_peft_import": {"source": str(source), "plans": str(plans_file),
                                          "labels": target_labels if head_from_source else None,
                                          "regions": regions, "source_labels": weights.labels,
                                          "source_labels_from": weights.labels_from, **report.to_dict()}}, tmp)
    logger.info(f"source classes: {weights.labels_from}" + (f" {weights.labels}" if weights.labels else ""))
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
