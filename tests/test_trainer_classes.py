"""Every trainer name a user can type is a ``class`` statement in ``trainers/`` (found by parsing, as ``grep``
would), with the settings of its method's registry entry, on both backbones."""
import ast
import re
import sys

import pytest

from hippo_peft import adapters as A
from hippo_peft import trainers
from tests.conftest import REPO, run

BACKBONES = {"unetr": "UNETR", "swinunetr": "SwinUNETR"}
SCHEDULES = {"": None, "_short": "SHORT", "_smoke": "SMOKE"}


def class_statements() -> dict[str, str]:
    """class name -> file, for every top-level ``class`` in trainers/*.py."""
    found = {}
    for path in sorted((REPO / "trainers").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found[node.name] = path.name
    return found


def written_out_classes(spec, backbone: str, base: str):
    """Every class name of ``spec``'s trainers on ``backbone`` (settings x schedules) is a class statement in
    trainers/nnUNetTrainer_<backbone>.py, exported, with the setting and schedule its name says; yields the classes
    with their setting's ``train_extra`` (None for a baseline)."""
    statements = class_statements()
    core = f"nnUNetTrainer_{backbone}_{spec.trainer_suffix}"
    settings = {core: "decoder_head" if not spec.baseline else None}
    if not spec.baseline:
        settings[core + "_Strict"] = "head"
    for name, train_extra in settings.items():
        for suffix, schedule in SCHEDULES.items():
            full = name + suffix
            assert statements.get(full) == f"nnUNetTrainer_{backbone}.py", (
                f"{full} is not a class statement in trainers/nnUNetTrainer_{backbone}.py; add\n\n"
                f"class {full}({name if suffix else base}):")
            cls = getattr(trainers, full)
            assert full in trainers.__all__ and cls.method == spec.name and cls.core_name() == name
            config = cls.adapter_config()
            assert type(config) is spec.config
            if train_extra:
                assert config.train_extra == train_extra
            if schedule:
                assert cls.schedule == getattr(trainers.base, schedule)
            yield cls, train_extra


@pytest.mark.parametrize("arch", BACKBONES)
@pytest.mark.parametrize("spec", A.method_specs(), ids=lambda s: s.name)
def test_every_registered_method_has_its_classes(spec, arch):
    for cls, _ in written_out_classes(spec, BACKBONES[arch], f"nnUNetTrainer_{BACKBONES[arch]}_Adapter"):
        assert cls.arch == arch


UNET_SPECS = [s for s in A.method_specs() if s.conv_layer is not None or s.name in ("headonly", "decoderonly")]


@pytest.mark.parametrize("spec", UNET_SPECS, ids=lambda s: s.name)
def test_every_method_with_a_conv_layer_has_its_unet_classes(spec):
    """nnU-Net's U-Nets: every method with a conv layer (and the head-only / decoder-only controls) has its
    written-out classes in trainers/nnUNetTrainer_UNet.py, with every encoder conv as targets."""
    for cls, train_extra in written_out_classes(spec, "UNet", "nnUNetTrainer_UNetAdapterBase"):
        if train_extra:
            assert cls.adapter_config().targets == "all"


def test_every_exported_trainer_is_a_class_statement():
    statements = class_statements()
    made_at_run_time = [n for n in trainers.__all__ if n not in statements]
    assert not made_at_run_time
    assert len(trainers.__all__) == (2 * (3 + 3 * sum(1 if s.baseline else 2 for s in A.method_specs()))
                                     + 3 * sum(1 if s.baseline else 2 for s in UNET_SPECS))


def readme_trainer_names() -> set[str]:
    # the README and the docs pages; results folders (<trainer>__<plans>__<config>) give their trainer;
    # `..._<N>it` placeholders end in "_"
    # module paths (hippo_peft.trainers.nnUNetTrainer_UNETR_adapters) and file names (.py) are not trainer names
    text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    names = {m.group().split("__")[0] for m in re.finditer(r"nnUNetTrainer_(?:UNETR|SwinUNETR|UNet)\w*", text)
             if text[m.start() - 1:m.start()] != "." and text[m.end():m.end() + 3] != ".py"}
    return {n for n in names if not re.search(r"_\d+it", n) and not n.endswith("_")}


def test_readme_trainer_names_are_class_statements():
    names = readme_trainer_names()
    assert {"nnUNetTrainer_UNETR_LoRAPT", "nnUNetTrainer_UNETR_LoRAPT_Strict", "nnUNetTrainer_SwinUNETR"} <= names
    statements = class_statements()
    assert sorted(n for n in names if n not in statements) == []


@pytest.mark.e2e
def test_nnunet_lookup_finds_every_readme_trainer(nnunet_env, tmp_path):
    names = sorted(readme_trainer_names())
    code = ("import sys\nfrom nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
            "for name in sys.argv[1:]:\n    print('FOUND', name, f(name).__module__)\n")
    out = run([sys.executable, "-c", code, *names], nnunet_env, tmp_path).stdout.split("\n")
    found = dict(line.split()[1:] for line in out if line.startswith("FOUND "))
    assert sorted(found) == names
    assert all(module.startswith("hippo_peft.trainers.nnUNetTrainer_") for module in found.values())
