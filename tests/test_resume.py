"""`nnUNetv2_train ... --c` after a kill continues an adapter run with its adapter and optimizer state: a LoRA-PT
run on phantoms is killed after its first epoch's checkpoint, resumed, and finishes; the optimizer's step count
continues (a fresh optimizer would restart it), frozen tensors never move, the adapter keeps training."""
import signal
import subprocess
import time

import torch

from hippo_peft.import_weights import network_from_plans
from hippo_peft.synthetic import write_dataset
from tests.conftest import bin_path, run

TRAINER = "nnUNetTrainer_UNETR_LoRAPT_smoke"


def test_kill_and_continue_keeps_adapter_and_optimizer_state(nnunet_env, tmp_path):
    env, cwd = nnunet_env, tmp_path
    write_dataset(env["nnUNet_raw"], "Dataset961_ResumePhantom", 4, seed=3)
    run([bin_path("hippo-peft"), "plan", "-d", "961", "--arch", "unetr", "--preset", "tiny", "-np", "1"], env, cwd)
    plans_file = tmp_path / "nnUNet_preprocessed" / "Dataset961_ResumePhantom" / "nnUNetPlans_UNETR_tiny.json"
    base, _ = network_from_plans(plans_file)
    torch.save({"network_weights": base.state_dict()}, tmp_path / "pretrained.pth")

    cmd = [bin_path("nnUNetv2_train"), "961", "3d_fullres", "all", "-tr", TRAINER, "-p", "nnUNetPlans_UNETR_tiny",
           "-device", "cpu"]
    fold = tmp_path / "nnUNet_results" / "Dataset961_ResumePhantom" / f"{TRAINER}__nnUNetPlans_UNETR_tiny__3d_fullres" \
        / "fold_all"
    proc = subprocess.Popen(cmd + ["-pretrained_weights", str(tmp_path / "pretrained.pth")], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        # "Epoch 1" is logged after epoch 0's checkpoint_latest.pth was written completely
        while not any("Epoch 1" in p.read_text() for p in fold.glob("training_log*.txt")):
            assert proc.poll() is None and time.time() < deadline, "training ended before its second epoch"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (fold / "checkpoint_final.pth").exists()
    latest = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] == 1 and latest["hippo_peft_adapter"]["pretrained_weights_loaded"]

    run(cmd + ["--c"], env, cwd)
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2
    steps = {int(s["step"]) for s in final["optimizer_state"]["state"].values()}
    assert steps == {4}, f"optimizer steps {steps}: the resumed run did not continue the optimizer state"
    # U, S, V of the three stacked tensors + the head's weight and bias, nothing else
    assert len(final["optimizer_state"]["state"]) == 3 * 3 + 2
    w0, w1, w2 = base.state_dict(), latest["network_weights"], final["network_weights"]
    frozen = ["encoder1.layer.conv1.conv.weight", "vit.patch_embedding.position_embeddings",
              "lorapt_tensors.w48x48.residual"]
    for key in frozen:
        assert torch.equal(w1[key], w2[key]), key
    assert torch.equal(w0["encoder1.layer.conv1.conv.weight"], w2["encoder1.layer.conv1.conv.weight"])
    assert not torch.equal(w1["lorapt_tensors.w48x48.U"], w2["lorapt_tensors.w48x48.U"])
    log = "".join(p.read_text() for p in fold.glob("training_log*.txt"))
    assert "WARNING" not in log  # resumed from a pre-trained run: no "random weights" warning
