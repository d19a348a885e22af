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


def _as_written_before_0_2(checkpoint: dict, net) -> dict:
    """A strict LoRA-PT checkpoint as hippo_peft < 0.2 wrote it: trainer nnUNetTrainer_UNETR_LoRAPT_smoke (adapter
    + head was its setting then), one optimizer group over the trainable tensors in ``net.parameters()`` order."""
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    state = checkpoint["optimizer_state"]
    groups = state["param_groups"]
    new_order = [n for n in names if not n.startswith("out.")] + [n for n in names if n.startswith("out.")]
    assert [len(g["params"]) for g in groups] == [len(new_order) - 2, 2]
    one = {k: v for k, v in groups[0].items() if k != "name"}
    one["params"] = list(range(len(names)))
    old_state = {names.index(n): state["state"][j] for j, n in enumerate(new_order)}
    checkpoint = dict(checkpoint, trainer_name=TRAINER, optimizer_state={"state": old_state, "param_groups": [one]})
    checkpoint["hippo_peft_adapter"] = {k: v for k, v in checkpoint["hippo_peft_adapter"].items()
                                        if k != "optimizer_groups"}
    return checkpoint


@pytest.mark.e2e
@pytest.mark.slow
def test_checkpoint_from_before_the_papers_setting_is_refused_and_continues_as_strict(nnunet_env, tmp_path):
    from hippo_peft import adapters as A
    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT_Strict

    env, cwd = nnunet_env, tmp_path
    strict = "nnUNetTrainer_UNETR_LoRAPT_Strict_smoke"
    write_dataset(env["nnUNet_raw"], "Dataset962_OldCheckpoint", 4, seed=4)
    run([bin_path("hippo-peft"), "plan", "-d", "962", "--arch", "unetr", "--preset", "tiny", "-np", "1"], env, cwd)
    plans_file = tmp_path / "nnUNet_preprocessed" / "Dataset962_OldCheckpoint" / "nnUNetPlans_UNETR_tiny.json"
    base, _ = network_from_plans(plans_file)
    torch.save({"network_weights": base.state_dict()}, tmp_path / "pretrained.pth")
    results = tmp_path / "nnUNet_results" / "Dataset962_OldCheckpoint"
    cmd = lambda trainer: [bin_path("nnUNetv2_train"), "962", "3d_fullres", "all", "-tr", trainer,  # noqa: E731
                           "-p", "nnUNetPlans_UNETR_tiny", "-device", "cpu"]
    run(cmd(strict) + ["-pretrained_weights", str(tmp_path / "pretrained.pth")], env, cwd)
    strict_folder = results / f"{strict}__nnUNetPlans_UNETR_tiny__3d_fullres"
    done = torch.load(strict_folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert {int(s["step"]) for s in done["optimizer_state"]["state"].values()} == {4}

    # the same run as hippo_peft 0.1 left it after its first of two epochs, in the old trainer's folder
    net = A.inject(network_from_plans(plans_file)[0], nnUNetTrainer_UNETR_LoRAPT_Strict.adapter_config())
    old = dict(_as_written_before_0_2(done, net), current_epoch=1)
    old_folder = results / f"{TRAINER}__nnUNetPlans_UNETR_tiny__3d_fullres"
    (old_folder / "fold_all").mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        (old_folder / name).write_bytes((strict_folder / name).read_bytes())
    torch.save(old, old_folder / "fold_all" / "checkpoint_latest.pth")

    refused = run(cmd(TRAINER) + ["--c"], env, cwd, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert f"-tr {strict} --c" in message and "before hippo_peft 0.2" in message, message[-3000:]
    assert not (old_folder / "fold_all" / "checkpoint_final.pth").exists()

    # as the message says: move the folder, continue with the strict trainer; the Adam state carries over
    import shutil
    shutil.rmtree(strict_folder)
    old_folder.rename(strict_folder)
    run(cmd(strict) + ["--c"], env, cwd)
    final = torch.load(strict_folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2
    steps = {int(s["step"]) for s in final["optimizer_state"]["state"].values()}
    assert steps == {6}, f"optimizer steps {steps}: the old one-group optimizer state was not continued"
    assert [g["name"] for g in final["optimizer_state"]["param_groups"]] == ["adapter", "decoder+head"]


def test_one_group_optimizer_state_is_regrouped_tensor_by_tensor():
    """Each tensor's Adam state goes to that tensor in the two-group layout, also when some have no state yet."""
    from types import SimpleNamespace

    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    net[1].bias.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]  # 0.w 0.b 1.w 2.w 2.b: the old group's order
    old = torch.optim.AdamW(trainable, lr=1e-3)
    old_state = old.state_dict()
    # same-shaped tensors (0.weight, 1.weight) get different markers; 2.bias never had a step
    old_state["state"] = {i: {"step": torch.tensor(float(10 + i)), "exp_avg": torch.full_like(p, float(i)),
                              "exp_avg_sq": torch.full_like(p, float(i))}
                          for i, p in enumerate(trainable) if i != 4}
    adapter, decoder = [net[1].weight, net[0].weight], [net[2].weight, net[2].bias, net[0].bias]
    new = torch.optim.AdamW([{"params": adapter, "lr": 1e-3, "name": "adapter"},
                             {"params": decoder, "lr": 5e-4, "name": "decoder+head"}])
    trainer = SimpleNamespace(network=net, optimizer=new)
    regrouped = nnUNetTrainer_UNETR_LoRAPT._regroup_optimizer_state(trainer, old_state)
    new.load_state_dict(regrouped)
    for p in adapter + decoder:
        i = next(i for i, q in enumerate(trainable) if q is p)
        if i == 4:
            assert p not in new.state or not new.state[p]
        else:
            assert float(new.state[p]["step"]) == 10 + i and torch.equal(new.state[p]["exp_avg"], torch.full_like(p, i))
    assert [g["lr"] for g in new.param_groups] == [1e-3, 5e-4]
    assert [g["name"] for g in new.param_groups] == ["adapter", "decoder+head"]
