"""nnU-Net finds our trainers from a normal install: through nnUNet_extTrainer, or the opt-in in-tree shim.
Everything here runs in subprocesses from a directory outside the repo, as a user's nnUNetv2_train does."""
import os
import shutil
import sys
from pathlib import Path

import pytest

from hippo_peft.nnunet.env import SHIM_MARKER, SHIM_NAME, install_shim, uninstall_shim
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


MAPPED = ("import importlib.util, pathlib, hippo_peft.trainers as t, hippo_peft.planners as p; "
          "from hippo_peft.trainers import nnUNetTrainer_UNETR as c; "
          "from hippo_peft.planners import transformer_planner as tp; "
          "print(t.__name__, p.__name__, c.__module__, tp.__name__); "
          "print(importlib.util.find_spec('trainers'), importlib.util.find_spec('planners')); "
          "print(pathlib.Path(t.__file__).resolve()); print(pathlib.Path(p.__file__).resolve())")


@pytest.mark.e2e
def test_installed_package_has_mapped_subpackages_from_anywhere(nnunet_env, tmp_path):
    """From any directory (editable or regular install): trainers/ and planners/ are hippo_peft.trainers /
    hippo_peft.planners, and no generic top-level `trainers` / `planners` exist."""
    out = run([sys.executable, "-c", MAPPED], nnunet_env, tmp_path).stdout.splitlines()
    assert out[0].split() == ["hippo_peft.trainers", "hippo_peft.planners", "hippo_peft.trainers.nnUNetTrainer_UNETR",
                              "hippo_peft.planners.transformer_planner"]
    assert out[1] == "None None"
    for line, folder in zip(out[2:4], ("trainers", "planners")):
        init = Path(line)
        # editable: the source folder; regular install: site-packages/hippo_peft/<folder>
        assert init.name == "__init__.py" and init.parent.name == folder
        assert init.parent == REPO / folder or init.parent.parent.name == "hippo_peft"


@pytest.mark.e2e
def test_source_checkout_resolves_mapped_subpackages(nnunet_env):
    """From the checkout (hippo_peft/ imported from the source folder), the mapped subpackages are the source
    folders too: an edit in trainers/ is what runs."""
    out = run([sys.executable, "-c", MAPPED], nnunet_env, REPO).stdout.splitlines()
    assert out[0].split()[:2] == ["hippo_peft.trainers", "hippo_peft.planners"]
    assert out[2:4] == [str(REPO / "trainers" / "__init__.py"), str(REPO / "planners" / "__init__.py")]


def test_the_package_path_is_its_own_folder_only():
    """hippo_peft/__init__.py leaves its __path__ alone: the repository's tests/, benchmarks/ and scripts/ are not
    importable as hippo_peft.tests, .benchmarks, .scripts from a checkout (the mapped subpackages come from the
    editable install's finder, or from the wheel)."""
    import importlib.util

    import hippo_peft
    assert [os.path.realpath(p) for p in hippo_peft.__path__] == [os.path.realpath(REPO / "hippo_peft")]
    for name in ("tests", "benchmarks", "scripts"):
        assert importlib.util.find_spec(f"hippo_peft.{name}") is None, name
    assert importlib.util.find_spec("hippo_peft.trainers") is not None


@pytest.mark.e2e
def test_wheel_holds_the_mapped_subpackages_and_nothing_top_level(tmp_path):
    """The wheel a user installs: trainers/ and planners/ inside hippo_peft/, no top-level trainers/, planners/ or
    tests/. Built offline from the checkout (no build isolation, no index)."""
    import zipfile
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    build = tmp_path / "src"
    # a copy: setuptools builds in-tree (build/, *.egg-info), and a stale build/lib would leak into the wheel
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "nnunet_work", ".whl",
        ".gpu_sample", "gpu_check_out", "*.pth", "*.nii.gz", "*.safetensors"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         str(tmp_path / "dist"), str(build)], env, tmp_path)
    wheel, = (tmp_path / "dist").glob("hippo_peft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("trainers", "planners"):
        assert {f"{folder}/{p.name}" for p in (REPO / folder).glob("*.py")} <= \
            {n.removeprefix("hippo_peft/") for n in names if n.startswith(f"hippo_peft/{folder}/")}
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"trainers", "planners", "tests", "scripts", "benchmarks", "docs"}, sorted(tops)
    assert tops <= {"hippo_peft", wheel.name.split("-py")[0] + ".dist-info"}, sorted(tops)


def _find_in(folder, name):
    """nnU-Net's own lookup over one trainer folder, as recursive_find_trainer_class_by_name does for its own."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    return recursive_find_python_class(str(folder), name, None, base_folder=str(folder),
                                       cleanup_imports_from_base_folder=True)


def test_in_tree_shim_install_and_uninstall(tmp_path, monkeypatch, capsys, caplog):
    """The shim makes our classes findable by nnU-Net's lookup, through the commands users run; a stand-in for
    nnunetv2's trainer folder keeps the test out of site-packages."""
    from hippo_peft import cli
    from hippo_peft.nnunet import env as nnunet_env_module
    from hippo_peft.trainers import nnUNetTrainer_UNETR
    folder = tmp_path / "nnUNetTrainer"
    folder.mkdir()
    monkeypatch.setattr(nnunet_env_module, "nnunet_trainer_dir", lambda: folder)
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    shim = folder / SHIM_NAME
    caplog.set_level("INFO")

    def says(text):
        return text in capsys.readouterr().out + caplog.text

    assert _find_in(folder, "nnUNetTrainer_UNETR") is None
    assert cli.main(["install-shim"]) in (0, None) and shim.is_file()
    assert _find_in(folder, "nnUNetTrainer_UNETR") is nnUNetTrainer_UNETR
    capsys.readouterr()
    assert cli.main(["env"]) in (0, None) and says(f"installed at {shim}")
    assert cli.main(["uninstall-shim"]) in (0, None) and not shim.exists()
    assert _find_in(folder, "nnUNetTrainer_UNETR") is None
    capsys.readouterr()
    caplog.clear()
    assert cli.main(["uninstall-shim"]) in (0, None) and says("No hippo_peft shim")


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
