"""Adapter files and merged models: ``hippo-peft export-adapter``, ``apply-adapter`` and ``merge``.

An adapter file is a folder with ``adapter.safetensors`` (the trained adapter tensors, any unfrozen head/decoder
tensors and the adapters' own buffers -- never pickle) and ``adapter_config.json`` (method and its config,
trainer, backbone, preset, network arguments, patch size, channel and class counts, and the SHA-256 fingerprint of
the frozen base weights the adapter was decomposed from). Applying it to other base weights is refused.

Models we write are nnU-Net model folders (``plans.json``, ``dataset.json``, ``fold_*/checkpoint_final.pth``) that
``nnUNetv2_predict_from_modelfolder -m FOLDER`` runs; a merged one names the base trainer (``nnUNetTrainer_UNETR``;
nnU-Net's own ``nnUNetTrainer`` for an adapted U-Net) and has the base network's keys, so it predicts at the base
network's speed.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from hippo_peft import adapters
from hippo_peft.atomic import atomic_dir
from hippo_peft.errors import HippoPeftError, InputError, MissingInputError, OutputExistsError
from hippo_peft.networks import arch_for_class_name
from hippo_peft.nnunet.checkpoint import CHECKPOINT_KEY
from hippo_peft.nnunet.plans import network_io

logger = logging.getLogger(__name__)

ADAPTER_FILE, CONFIG_FILE = "adapter.safetensors", "adapter_config.json"
UNET = "unet"  # the adapter file's "arch" for nnU-Net's own U-Nets (PlainConvUNet, ResidualEncoderUNet)


def _arch_name(network_class_name: str) -> str:
    from hippo_peft.trainers.unet import UNET_NETWORKS
    if network_class_name.rsplit(".", 1)[-1] in UNET_NETWORKS:
        return UNET
    spec = arch_for_class_name(network_class_name)
    if spec is None:
        raise InputError(f"{network_class_name} is neither a hippo_peft network nor one of nnU-Net's conv U-Nets.")
    return spec.name


def _merged_trainer(arch: str) -> str:
    """The plain trainer a merged model names: the backbone's own, nnU-Net's for its U-Nets."""
    from hippo_peft.networks import get_arch
    return "nnUNetTrainer" if arch == UNET else get_arch(arch).trainer


def _base_network(plans_file: Path, configuration: str, arch: str) -> tuple[nn.Module, int]:
    """The plain network the plans describe (randomly initialised) and its input channels."""
    if arch != UNET:
        from hippo_peft.nnunet.import_weights import network_from_plans
        return network_from_plans(plans_file, configuration)
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text())
    pm, cm, n_in, n_out = network_io(plans_file, dataset_json, configuration)
    return nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, False), n_in


class AdapterMismatchError(HippoPeftError, ValueError):
    """The adapter does not belong to these base weights / this network."""


def _fold_dirs(model_dir: Path, folds) -> list[Path]:
    if not (model_dir / "plans.json").is_file():
        raise MissingInputError(f"{model_dir} is not an nnU-Net model folder (no plans.json); give the folder "
                                f"$nnUNet_results/DatasetXXX/<trainer>__<plans>__<configuration>.")
    found = sorted(p for p in model_dir.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
    if folds:
        found = [model_dir / f"fold_{f}" for f in folds]
        missing = [str(p) for p in found if not (p / "checkpoint_final.pth").is_file()]
        if missing:
            raise MissingInputError(f"no checkpoint_final.pth in {', '.join(missing)}")
    if not found:
        raise MissingInputError(f"no fold_*/checkpoint_final.pth under {model_dir}; has training finished?")
    return found


def _readable_config(recorded: dict) -> dict | None:
    """The recorded adapter config as this hippo_peft writes it, or None when it cannot read it."""
    try:
        return adapters.config_from_dict(recorded).to_dict()
    except (TypeError, ValueError, KeyError):
        return None


def load_trained(fold_dir: Path):
    """(adapted network with the checkpoint loaded, checkpoint, plans, dataset_json, trainer class)."""
    from hippo_peft import trainers
    from hippo_peft.safe_load import load_weights_file
    checkpoint = load_weights_file(fold_dir / "checkpoint_final.pth")
    if not isinstance(checkpoint, dict):
        raise InputError(f"{fold_dir / 'checkpoint_final.pth'} is not an nnU-Net checkpoint (a dict is expected).")
    # nnU-Net writes these keys; a file without them was edited or written by something else (one line, not a
    # KeyError's traceback)
    missing = [k for k in ("trainer_name", "network_weights", "init_args") if k not in checkpoint]
    if missing or not isinstance(checkpoint["init_args"], dict) or "configuration" not in checkpoint["init_args"]:
        raise InputError(f"{fold_dir / 'checkpoint_final.pth'} is not an nnU-Net checkpoint as nnUNetv2_train "
                         f"writes it (missing {', '.join(missing) or 'init_args.configuration'}).")
    name = checkpoint.get("trainer_name")
    trainer = getattr(trainers, name, None) if name else None
    if trainer is None or not issubclass(trainer, trainers.AdapterMixin):
        raise InputError(f"{fold_dir} was trained with {name}, not a hippo_peft adapter trainer "
                         f"(nnUNetTrainer_UNETR_LoRAPT, nnUNetTrainer_UNet_LoRAPT, ...); there is no adapter to "
                         f"export or merge.")
    recorded = checkpoint.get(CHECKPOINT_KEY, {}).get("config")
    if recorded is not None and _readable_config(recorded) != trainer.adapter_config().to_dict():
        raise AdapterMismatchError(f"{fold_dir} was trained with adapter {recorded}, but {name} uses "
                                   f"{trainer.adapter_config().to_dict()}: the checkpoint was written by another "
                                   f"hippo_peft version (or edited), which this one cannot read. Train the fold again.")
    model_dir = fold_dir.parent
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset_json = json.loads((model_dir / "dataset.json").read_text())
    pm, cm, n_in, n_out = network_io(plans, dataset_json, checkpoint["init_args"]["configuration"])
    net = trainer.build_network_architecture(pm, cm, n_in, n_out, False)
    net.load_state_dict(checkpoint["network_weights"])
    return net, checkpoint, plans, dataset_json, trainer


META_FIELDS = {"method", "config", "trainer", "arch", "preset", "network_class_name", "arch_kwargs", "patch_size",
               "configuration", "base_fingerprint", "pretrained_weights_loaded", "trainable", "source_fold",
               "adapter_bytes", "checkpoint_bytes"}


def _read_meta(path: Path) -> dict:
    """An adapter's JSON with exactly the fields export-adapter writes (one line naming what is wrong otherwise)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterMismatchError(f"{path}: not readable JSON ({type(e).__name__}: {e}). Export the adapter "
                                   f"again.") from None
    if not isinstance(meta, dict):
        raise AdapterMismatchError(f"{path}: not an adapter description (a JSON object is expected).")
    missing, extra = sorted(META_FIELDS - set(meta)), sorted(set(meta) - META_FIELDS)
    if missing or extra:
        raise AdapterMismatchError(
            f"{path}: {'missing field(s) ' + ', '.join(missing) if missing else ''}{'; ' if missing and extra else ''}"
            f"{'unknown field(s) ' + ', '.join(extra) if extra else ''}: not as export-adapter writes it (edited, or "
            f"from another hippo_peft version). Export the adapter again.")
    return meta


def _check_setting(path: Path, meta: dict) -> None:
    """The file's config is one this hippo_peft reads and the one its trainer trains (refused otherwise: edited, or
    written by another hippo_peft version)."""
    from hippo_peft import trainers
    config = _readable_config(meta["config"])
    recorded_cls = getattr(trainers, meta["trainer"], None)
    uses = (recorded_cls.adapter_config().to_dict() if recorded_cls is not None
            and issubclass(recorded_cls, trainers.AdapterMixin) else None)
    if config is None or (recorded_cls is not None and config != uses):
        what = "one this hippo_peft reads" if config is None else f"what its trainer {meta['trainer']} trains"
        raise AdapterMismatchError(f"{path}: adapter config {meta['config']} is not {what} (edited, or from another "
                                   f"hippo_peft version). Export the adapter again. Nothing was written.")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it. Nothing was written.")


def export_adapter(fold_dir: str | Path, output: str | Path, overwrite: bool = False) -> dict:
    """Write ``output/adapter.safetensors`` + ``output/adapter_config.json`` from a trained fold folder."""
    fold_dir, output = Path(fold_dir), Path(output)
    _refuse_existing(output, overwrite)
    net, checkpoint, plans, dataset_json, trainer = load_trained(fold_dir)
    record = checkpoint.get(CHECKPOINT_KEY, {})
    configuration = checkpoint["init_args"]["configuration"]
    config = plans["configurations"][configuration]
    arch = _arch_name(config["architecture"]["network_class_name"])
    state = adapters.adapter_state_dict(net)
    with atomic_dir(output, overwrite) as tmp:  # a killed export leaves no folder a later run would accept
        meta = _write_adapter(tmp, state, trainer, config, configuration, arch, record, net, fold_dir)
    logger.info(f"Wrote {output / ADAPTER_FILE}: {len(state)} tensors, {meta['adapter_bytes'] / 2**20:.2f} MiB = "
                f"{100 * meta['adapter_bytes'] / meta['checkpoint_bytes']:.2f} % of the full checkpoint "
                f"({meta['checkpoint_bytes'] / 2**20:.1f} MiB, which also holds optimizer state); "
                f"{adapters.trainable_report(net)}")
    return meta


def _write_adapter(output: Path, state: dict, trainer, config: dict, configuration: str, arch: str, record: dict,
                   net: nn.Module, fold_dir: Path) -> dict:
    from safetensors.torch import save_file
    save_file(state, str(output / ADAPTER_FILE), metadata={"format": "hippo_peft-adapter", "method": trainer.method})
    meta = {
        "method": trainer.method, "config": trainer.adapter_config().to_dict(), "trainer": trainer.__name__,
        "arch": arch, "preset": config.get("hippo_peft", {}).get("preset"),
        "network_class_name": config["architecture"]["network_class_name"],
        "arch_kwargs": config["architecture"]["arch_kwargs"], "patch_size": config["patch_size"],
        "configuration": configuration, "base_fingerprint": record.get("base_fingerprint"),
        "pretrained_weights_loaded": record.get("pretrained_weights_loaded"),
        "trainable": adapters.trainable_report(net).to_dict(), "source_fold": str(fold_dir.resolve()),
        "adapter_bytes": (output / ADAPTER_FILE).stat().st_size,
        "checkpoint_bytes": (fold_dir / "checkpoint_final.pth").stat().st_size,
    }
    (output / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def _write_model_folder(output: Path, network: nn.Module, trainer_name: str, plans: dict, dataset_json: dict,
                        configuration: str, extra: dict, fold="all") -> Path:
    (output / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    (output / "plans.json").write_text(json.dumps(plans, indent=2))
    (output / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": trainer_name,
                  "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                "dataset_json": dataset_json, "device": "cpu"},
                  "inference_allowed_mirroring_axes": (0, 1, 2), **extra}
    path = output / f"fold_{fold}" / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    return path


def apply_adapter(adapter_dir: str | Path, base_weights: str | Path, plans_file: str | Path, output: str | Path,
                  merge: bool = False, overwrite: bool = False, trust_pickle: bool = False) -> Path:
    """Base weights + adapter file -> an nnU-Net model folder (adapted, or merged into the base network);
    ``trust_pickle``: the base checkpoint may be unpickled without the allow-list (see hippo_peft.safe_load)."""
    from hippo_peft.nnunet.weights import read_state_dict, transfer_weights
    adapter_dir, output, plans_file = Path(adapter_dir), Path(output), Path(plans_file)
    if not (adapter_dir / CONFIG_FILE).is_file() or not (adapter_dir / ADAPTER_FILE).is_file():
        raise MissingInputError(f"{adapter_dir} holds no {ADAPTER_FILE} + {CONFIG_FILE} (written by "
                                f"`hippo-peft export-adapter`).")
    _refuse_existing(output, overwrite)
    meta = _read_meta(adapter_dir / CONFIG_FILE)
    _check_setting(adapter_dir / CONFIG_FILE, meta)
    plans = json.loads(plans_file.read_text())
    configuration = meta["configuration"]
    config = plans["configurations"].get(configuration, {})
    planned = (config.get("architecture", {}).get("network_class_name"), config.get("architecture", {}).get(
        "arch_kwargs"), config.get("patch_size"))
    if planned != (meta["network_class_name"], meta["arch_kwargs"], meta["patch_size"]):
        raise AdapterMismatchError(
            f"{plans_file} describes {planned[0]} {planned[1]} at patch {planned[2]}, the adapter was trained on "
            f"{meta['network_class_name']} {meta['arch_kwargs']} at patch {meta['patch_size']}. Use the plans of the "
            f"adapter's training (its model folder's plans.json). Nothing was written.")
    net, in_channels = _base_network(plans_file, configuration, meta["arch"])
    transfer_weights(net, read_state_dict(base_weights, trust_pickle), in_channels)
    config_obj = adapters.config_from_dict(meta["config"])
    fingerprint = adapters.base_fingerprint(net, config_obj)
    if fingerprint != meta["base_fingerprint"]:
        raise AdapterMismatchError(
            f"{base_weights} are not the weights this {meta['method']} adapter was trained on (base fingerprint "
            f"{fingerprint[:12]}..., adapter records {str(meta['base_fingerprint'])[:12]}...). Use the pre-trained "
            f"checkpoint given to -pretrained_weights when it was trained. Nothing was written.")
    adapters.inject(net, config_obj)
    from hippo_peft.safe_load import load_weights_file
    try:
        adapters.load_adapter_state_dict(net, load_weights_file(adapter_dir / ADAPTER_FILE))
    except ValueError as e:
        raise AdapterMismatchError(f"{adapter_dir / ADAPTER_FILE}: {e} Nothing was written.") from None
    trainer_name = meta["trainer"]
    if merge:
        trainer_name = _merge_or_refuse(net, meta["method"], meta["arch"])
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text())
    record = {} if merge else {CHECKPOINT_KEY: {"method": meta["method"], "config": meta["config"],
                                                "base_fingerprint": fingerprint}}
    with atomic_dir(output, overwrite) as tmp:
        _write_model_folder(tmp, net, trainer_name, plans, dataset_json, configuration, record)
    path = output / "fold_all" / "checkpoint_final.pth"
    logger.info(f"Wrote {path} ({'merged into ' if merge else ''}{trainer_name}); predict with "
                f"nnUNetv2_predict_from_modelfolder -i IN -o OUT -m {output} -f all")
    return path


def _merge_or_refuse(net: nn.Module, method: str, arch: str) -> str:
    if method == "hyps":
        raise InputError("HyPS cannot be merged into the base network: its serial adapters are non-linear (ReLU) and "
                         "have no equivalent linear weight. Predict with the HyPS trainer itself "
                         "(nnUNetv2_predict ... -tr nnUNetTrainer_<backbone>_HyPS). Nothing was written.")
    adapters.merge(net)
    return _merged_trainer(arch)


def merge_model(model_dir: str | Path, output: str | Path, folds=None, overwrite: bool = False) -> Path:
    """Fold the adapters of every trained fold into plain base-network checkpoints (a new model folder)."""
    model_dir, output = Path(model_dir), Path(output)
    _refuse_existing(output, overwrite)
    with atomic_dir(output, overwrite) as tmp:  # all folds or none; an existing folder is replaced whole
        for fold_dir in _fold_dirs(model_dir, folds):
            net, checkpoint, plans, dataset_json, trainer = load_trained(fold_dir)
            arch = _arch_name(plans["configurations"][checkpoint["init_args"]["configuration"]]["architecture"][
                "network_class_name"])
            base_trainer = _merge_or_refuse(net, trainer.method, arch)
            fold = fold_dir.name[len("fold_"):]
            _write_model_folder(tmp, net, base_trainer, plans, dataset_json, checkpoint["init_args"]["configuration"],
                                {"hippo_peft_merged_from": trainer.__name__,
                                 "inference_allowed_mirroring_axes": checkpoint.get(
                                     "inference_allowed_mirroring_axes", (0, 1, 2))}, fold=fold)
            logger.info(f"Merged {fold_dir.name} of {trainer.__name__} into {base_trainer}: "
                        f"{output / fold_dir.name / 'checkpoint_final.pth'}")
        for extra in ("dataset_fingerprint.json",):
            if (model_dir / extra).is_file():
                shutil.copy(model_dir / extra, tmp / extra)
    logger.info(f"Predict with: nnUNetv2_predict_from_modelfolder -i IN -o OUT -m {output} -f "
                f"{' '.join(p.name[5:] for p in _fold_dirs(output, None))}")
    return output
