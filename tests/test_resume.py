"""`nnUNetv2_train ... --c` after a kill continues an adapter run with its adapter and optimizer state: a LoRA-PT
run on phantoms is killed after its first epoch's checkpoint, resumed, and finishes; the optimizer's step count
continues (a fresh optimizer would restart it), frozen tensors never move, the adapter keeps training."""
import pytest
import signal
import subprocess
import time

import torch

from hippo_peft.nnunet.import_weights import network_from_plans
from hippo_peft.experiments.synthetic import write_dataset
from tests.conftest import bin_path, run

TRAINER = "nnUNetTrainer_UNETR_LoRAPT_smoke"


def w_keys(net) -> list[str]:
    return [n for n, _ in net.named_parameters()]


@pytest.mark.e2e
@pytest.mark.slow
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
    # the resumed run keeps the record of the weights the adapter was decomposed from (apply-adapter checks it)
    assert final["hippo_peft_adapter"]["base_fingerprint"] == latest["hippo_peft_adapter"]["base_fingerprint"]
    assert final["hippo_peft_adapter"]["optimizer_groups"] == ["adapter", "decoder+head"]
    steps = {int(s["step"]) for s in final["optimizer_state"]["state"].values()}
    assert steps == {4}, f"optimizer steps {steps}: the resumed run did not continue the optimizer state"
    # U, S, V of the three stacked tensors in the adapter group; the decoder blocks + head in their own group
    groups = final["optimizer_state"]["param_groups"]
    decoder_head = [k for k in w_keys(base) if k.split(".")[0] in ("decoder2", "decoder3", "decoder4", "decoder5", "out")]
    assert [g["name"] for g in groups] == ["adapter", "decoder+head"]
    assert [len(g["params"]) for g in groups] == [3 * 3, len(decoder_head)]
    assert len(final["optimizer_state"]["state"]) == 3 * 3 + len(decoder_head)
    # each group keeps its own start rate (class attributes) under the shared warm-up + poly curve
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-3] and [g["weight_decay"] for g in groups] == [1e-5, 1e-5]
    w0, w1, w2 = base.state_dict(), latest["network_weights"], final["network_weights"]
    frozen = ["encoder1.layer.conv1.conv.weight", "vit.patch_embedding.position_embeddings",
              "lorapt_tensors.w48x48.residual", "encoder4.transp_conv_init.conv.weight"]
    for key in frozen:
        assert torch.equal(w1[key], w2[key]), key
    assert torch.equal(w0["encoder1.layer.conv1.conv.weight"], w2["encoder1.layer.conv1.conv.weight"])
    assert not torch.equal(w1["lorapt_tensors.w48x48.U"], w2["lorapt_tensors.w48x48.U"])
    assert not torch.equal(w1["decoder2.transp_conv.conv.weight"], w2["decoder2.transp_conv.conv.weight"])
    log = "".join(p.read_text() for p in fold.glob("training_log*.txt"))
    assert "WARNING" not in log  # resumed from a pre-trained run: no "random weights" warning


def test_checkpoint_this_version_cannot_continue_is_refused():
    """`--c` on a checkpoint without our record of optimizer groups (another trainer, another hippo_peft version),
    with another adapter setting, or with another optimizer layout is refused with what to do; nothing is
    converted."""
    from types import SimpleNamespace

    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT, nnUNetTrainer_UNETR_LoRAPT_Strict
    trainer = object.__new__(nnUNetTrainer_UNETR_LoRAPT)  # the checks come before anything nnU-Net set up
    trainer.was_initialized = True
    trainer.optimizer = SimpleNamespace(param_groups=[{"name": "adapter"}, {"name": "decoder+head"}])
    ours = {"method": "lorapt", "config": nnUNetTrainer_UNETR_LoRAPT.adapter_config().to_dict(),
            "optimizer_groups": ["adapter", "decoder+head"]}
    one_group = {"state": {}, "param_groups": [{"params": []}]}

    def checkpoint(record, optimizer_state=one_group):
        return {"trainer_name": TRAINER, "optimizer_state": optimizer_state,
                **({"hippo_peft_adapter": record} if record is not None else {})}

    for record in (None, {k: v for k, v in ours.items() if k != "optimizer_groups"}):
        with pytest.raises(RuntimeError, match="another hippo_peft version.*Start a new training"):
            trainer.load_checkpoint(checkpoint(record))
    strict = {**ours, "config": nnUNetTrainer_UNETR_LoRAPT_Strict.adapter_config().to_dict()}
    with pytest.raises(RuntimeError, match="trained with adapter.*Continue it with the trainer that wrote it"):
        trainer.load_checkpoint(checkpoint(strict))
    with pytest.raises(RuntimeError, match="1 parameter groups.*has 2"):
        trainer.load_checkpoint(checkpoint(ours))
