"""Bad input gets a clear error before anything is lost or trained: one line and exit 2 for our errors, a
traceback and exit 3 for anything else (a bug); e2e tests run the commands in subprocesses, like a user's shell."""
import ast
import importlib
import json
import logging

import pytest

from hippo_peft import cli
from hippo_peft.errors import HippoPeftError, InputError
from hippo_peft.experiments.synthetic import write_dataset
from tests.conftest import bin_path, minimal_plans, modules, run


def test_our_error_is_one_line_and_exit_2(monkeypatch, capsys):
    def refuse(args):
        raise InputError("--foo 3: give a number below 2.")
    monkeypatch.setattr(cli, "_cmd_env", refuse)
    assert cli.main(["env"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "hippo-peft env: error: --foo 3: give a number below 2.\n" and captured.out == ""


def test_library_input_errors_reach_the_user_in_one_line(tmp_path, capsys):
    assert cli.main(["synthetic-cohort", str(tmp_path), "--n-per-group", "1"]) == 2
    assert capsys.readouterr().err == "hippo-peft synthetic-cohort: error: --n-per-group must be >= 2 (got 1).\n"
    assert cli.main(["benchmark", "--target", str(tmp_path), "--workdir", str(tmp_path / "w"), "--n-test", "x"]) == 2
    assert capsys.readouterr().err.startswith("hippo-peft benchmark: error: --n-test x:")


def test_torch_runtime_error_keeps_its_traceback_and_exit_3(monkeypatch, capsys):
    import torch

    def bug(args):
        return torch.zeros(2, 3) @ torch.zeros(2, 3)  # torch raises RuntimeError: a bug, not bad input
    monkeypatch.setattr(cli, "_cmd_env", bug)
    assert cli.main(["env"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError" in err and "in bug" in err
    assert err.rstrip().endswith("hippo-peft env: internal error (above); please report it.")


def test_library_log_messages_reach_stdout(monkeypatch, capsys):
    def talk(args):
        logging.getLogger("hippo_peft.some_module").info("wrote 3 files")
    monkeypatch.setattr(cli, "_cmd_env", talk)
    assert cli.main(["env"]) == 0
    assert cli.main(["env"]) == 0  # configured once: each message once, to the stdout of the moment
    assert capsys.readouterr().out == "wrote 3 files\nwrote 3 files\n"


def _error_classes():
    """Every exception class defined in the package (found by reading the source, checked after importing)."""
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        names = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                 and (n.name.endswith(("Error", "Exception")) or any(ast.unparse(b).endswith(("Error", "Exception"))
                                                                      for b in n.bases))]
        if names:
            module = importlib.import_module(name)
            found += [getattr(module, n) for n in names if isinstance(getattr(module, n, None), type)]
    return [c for c in found if issubclass(c, BaseException)]


def test_every_error_class_of_ours_is_a_hippo_peft_error():
    classes = _error_classes()
    assert len(classes) >= 10, classes  # the walk finds them (errors.py's own five, safe_load's two, ...)
    assert [c.__qualname__ for c in classes if not issubclass(c, HippoPeftError)] == []
    # ... keeping the builtin base that callers catch
    from hippo_peft.nnunet.weights import WeightsMismatchError
    from hippo_peft.safe_load import WeightsFileError
    assert issubclass(WeightsFileError, ValueError) and issubclass(WeightsMismatchError, RuntimeError)


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
    assert "input channels 4 -> 1" in proc.stdout and "head left fresh (2 rows in checkpoint, 3 here)" in proc.stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["network_weights"]["out.conv.conv.weight"].shape[0] == 3
    proc = run(cmd, nnunet_env, tmp_path, check=False)  # never overwrite silently
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
