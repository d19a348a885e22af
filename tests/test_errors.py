"""Bad input gets a clear error before anything is lost or trained (subprocesses, like a user's shell)."""
import json

import pytest

from hippo_peft.experiments.synthetic import write_dataset
from tests.conftest import bin_path, minimal_plans, run


@pytest.mark.e2e
@pytest.mark.slow
def test_fold_with_fewer_cases_than_folds_explains_fold_all(nnunet_env, tmp_path):
    write_dataset(tmp_path / "nnUNet_raw", "Dataset951_Few", n_train=3)
    run([bin_path("hippo-peft"), "plan", "-d", "951", "--arch", "unetr", "--preset", "tiny", "-np", "1"],
        nnunet_env, tmp_path)
    proc = run([bin_path("nnUNetv2_train"), "951", "3d_fullres", "0", "-tr", "nnUNetTrainer_UNETR_smoke", "-p",
                "nnUNetPlans_UNETR_tiny", "-device", "cpu"], nnunet_env, tmp_path, check=False)
    assert proc.returncode != 0
    assert "fewer than nnU-Net's 5" in proc.stderr and "fold `all`" in proc.stderr
    # ... and the wrong backbone's trainer on these plans is refused with the right trainer name
    proc = run([bin_path("nnUNetv2_train"), "951", "3d_fullres", "all", "-tr", "nnUNetTrainer_SwinUNETR_smoke", "-p",
                "nnUNetPlans_UNETR_tiny", "-device", "cpu"], nnunet_env, tmp_path, check=False)
    assert proc.returncode != 0 and "-tr nnUNetTrainer_UNETR" in proc.stderr
    # an indivisible explicit patch size is refused, the existing plans file untouched
    plans_file = tmp_path / "nnUNet_preprocessed" / "Dataset951_Few" / "nnUNetPlans_UNETR_tiny.json"
    before = plans_file.read_text()
    proc = run([bin_path("hippo-peft"), "plan", "-d", "951", "--arch", "unetr", "--preset", "tiny", "--overwrite",
                "--patch-size", "40", "48", "48"], nnunet_env, tmp_path, check=False)
    assert proc.returncode == 2 and "multiples of 16" in proc.stderr
    assert plans_file.read_text() == before


@pytest.mark.e2e
def test_import_weights_refuses_wrong_architecture_and_existing_output(nnunet_env, tmp_path):
    import torch

    from hippo_peft.networks import build_network, get_preset

    plans, dataset_json = minimal_plans("unetr", "tiny", [32, 32, 32])
    folder = tmp_path / "pre"
    folder.mkdir()
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    swin = build_network("monai.networks.nets.SwinUNETR", get_preset("swinunetr", "tiny"), [32, 32, 32], 4, 2)
    torch.save({"state_dict": swin.state_dict()}, tmp_path / "swin.pt")
    out = tmp_path / "imported.pth"
    cmd = [bin_path("hippo-peft"), "import-weights", str(tmp_path / "swin.pt"), "--plans", str(folder / "plans.json"),
           "-o", str(out)]
    proc = run(cmd, nnunet_env, tmp_path, check=False)
    assert proc.returncode == 2 and "another backbone or preset" in proc.stderr and not out.exists()

    # a foreign MONAI UNETR with 4 channels and 2 classes imports (channels adapted, head re-initialised)
    unetr = build_network("monai.networks.nets.UNETR", get_preset("unetr", "tiny"), [32, 32, 32], 4, 2)
    torch.save({f"module.{k}": v for k, v in unetr.state_dict().items()}, tmp_path / "unetr.pt")
    cmd[2] = str(tmp_path / "unetr.pt")
    proc = run(cmd, nnunet_env, tmp_path)
    assert "input channels 4 -> 1" in proc.stdout and "2 classes in checkpoint, 3 here" in proc.stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["network_weights"]["out.conv.conv.weight"].shape[0] == 3
    proc = run(cmd, nnunet_env, tmp_path, check=False)  # never overwrite silently
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
