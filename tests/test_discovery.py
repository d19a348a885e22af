"""nnU-Net finds our trainers from a normal install: through nnUNet_extTrainer, or the opt-in in-tree shim.
Everything here runs in subprocesses from a directory outside the repo, as a user's nnUNetv2_train does."""
import os
import sys

import pytest

from hippo_peft.nnunet.env import SHIM_MARKER, install_shim, uninstall_shim
from tests.conftest import REPO, bin_path, run

FIND = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
        "import sys; c = f(sys.argv[1]); print('FOUND', c.__module__, c.__name__)")


def find(name, env, cwd, check=True):
    return run([sys.executable, "-c", FIND, name], env, cwd, check=check)


@pytest.mark.e2e
def test_ext_trainer_folder_finds_our_classes(nnunet_env, tmp_path):
    out = find("nnUNetTrainer_SwinUNETR_short", nnunet_env, tmp_path).stdout
    assert "FOUND hippo_peft.trainers.nnUNetTrainer_SwinUNETR nnUNetTrainer_SwinUNETR_short" in out


@pytest.mark.e2e
def test_misspelled_trainer_lists_ours(nnunet_env, tmp_path):
    proc = find("nnUNetTrainer_UNTER_short", nnunet_env, tmp_path, check=False)
    assert proc.returncode != 0
    # nnU-Net's own "not found" ends the lookup (our module only says AttributeError), and our hint is beside it
    assert "Could not find requested nnunet trainer nnUNetTrainer_UNTER_short" in proc.stderr
    assert "Did you mean nnUNetTrainer_UNETR_short" in proc.stderr
    assert "nnUNetTrainer_SwinUNETR" in proc.stderr  # the list of ours
    assert proc.stderr.count("Did you mean") == 1


@pytest.mark.e2e
def test_users_near_miss_trainer_in_a_later_ext_folder_is_found(nnunet_env, tmp_path):
    """Our module is inspected first; a name close to ours must not stop nnU-Net's lookup (hasattr only swallows
    AttributeError), so the user's own trainer in the next nnUNet_extTrainer folder is found."""
    user = tmp_path / "user_trainers"
    user.mkdir()
    (user / "my_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
        "class nnUNetTrainer_UNETR_shortt(nnUNetTrainer):\n    pass\n")
    env = dict(nnunet_env, nnUNet_extTrainer=os.pathsep.join([nnunet_env["nnUNet_extTrainer"], str(user)]))
    proc = find("nnUNetTrainer_UNETR_shortt", env, tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FOUND my_trainers nnUNetTrainer_UNETR_shortt" in proc.stdout


@pytest.mark.e2e
def test_installed_package_has_mapped_subpackages_from_anywhere(nnunet_env, tmp_path):
    code = ("import hippo_peft.trainers as t, hippo_peft.planners as p, os; "
            "print(os.path.dirname(t.__file__)); print(os.path.dirname(p.__file__))")
    out = run([sys.executable, "-c", code], nnunet_env, tmp_path).stdout.split()
    assert out[0].endswith(os.path.join("hippo_peft", "trainers"))
    assert out[1].endswith(os.path.join("hippo_peft", "planners"))
    # and no generic top-level names were installed
    proc = run([sys.executable, "-c", "import trainers"], nnunet_env, tmp_path, check=False)
    assert proc.returncode != 0


@pytest.mark.e2e
def test_source_checkout_resolves_mapped_subpackages(nnunet_env):
    code = "import hippo_peft.trainers as t; print(t.__file__)"
    out = run([sys.executable, "-c", code], nnunet_env, REPO).stdout.strip()
    assert out == str(REPO / "trainers" / "__init__.py")


@pytest.mark.e2e
def test_in_tree_shim_install_and_uninstall(nnunet_env, tmp_path):
    env = {k: v for k, v in nnunet_env.items() if k != "nnUNet_extTrainer"}
    assert find("nnUNetTrainer_UNETR", env, tmp_path, check=False).returncode != 0
    hp = bin_path("hippo-peft")
    try:
        run([hp, "install-shim"], env, tmp_path)
        assert "FOUND hippo_peft.trainers" in find("nnUNetTrainer_UNETR", env, tmp_path).stdout
        assert "installed at" in run([hp, "env"], env, tmp_path).stdout
    finally:
        run([hp, "uninstall-shim"], env, tmp_path)
    assert find("nnUNetTrainer_UNETR", env, tmp_path, check=False).returncode != 0
    assert "No hippo_peft shim" in run([hp, "uninstall-shim"], env, tmp_path).stdout


def test_shim_never_touches_a_foreign_file(tmp_path):
    foreign = tmp_path / "hippo_peft_shim.py"
    foreign.write_text("# someone else's module\n")
    with pytest.raises(FileExistsError):
        install_shim(tmp_path)
    with pytest.raises(FileExistsError):
        uninstall_shim(tmp_path)
    assert foreign.read_text() == "# someone else's module\n"
    foreign.unlink()
    assert SHIM_MARKER in install_shim(tmp_path).read_text()
    assert uninstall_shim(tmp_path) == foreign and not foreign.exists()


@pytest.mark.e2e
def test_env_prints_export_line_and_missing_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    out = run([bin_path("hippo-peft"), "env"], env, tmp_path).stdout
    assert "export nnUNet_extTrainer=" in out and "nnunet_ext" in out
    assert "nnUNet_raw is NOT set" in out


@pytest.mark.e2e
def test_plan_without_nnunet_variables_says_what_to_export(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    proc = run([bin_path("hippo-peft"), "plan", "-d", "4", "--arch", "unetr"], env, tmp_path, check=False)
    assert proc.returncode == 2
    assert "export nnUNet_raw=" in proc.stderr and "Traceback" not in proc.stderr
