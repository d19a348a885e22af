"""Adapter files and merged model folders: export -> apply reproduces the trained outputs; a merged folder has the
base keys, runs in nnU-Net's own predictor with the base trainer and gives the same logits; other base weights are
refused with nothing written."""
import json
import logging

import pytest
import torch

from hippo_peft import adapters as A
from hippo_peft.nnunet.adapter_files import AdapterMismatchError, apply_adapter, export_adapter, merge_model
from hippo_peft.trainers import nnUNetTrainer_UNETR_HyPS, nnUNetTrainer_UNETR_LoRAPT
from tests.conftest import trained_model_folder

PATCH = [48, 64, 48]


def logits(folder, x):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(folder), ("all",))
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.network.eval()
    with torch.no_grad():
        return predictor.network(x), type(predictor.network), predictor.trainer_name


def test_export_apply_merge_round_trip(tmp_path, monkeypatch, ext_trainer_dir, caplog):
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_dir)
    caplog.set_level(logging.INFO, logger="hippo_peft")  # what the CLI shows on stdout
    model, net = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        expected = net(x)

    meta = export_adapter(model / "fold_all", tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["method"] == "lorapt" and saved["preset"] == "tiny" and saved["base_fingerprint"]
    assert meta["adapter_bytes"] < 0.25 * meta["checkpoint_bytes"]
    assert b"hippo_peft-adapter" in (tmp_path / "adapter" / "adapter.safetensors").read_bytes()[:4096]
    # the papers' setting: the file carries the trained decoder blocks and head, not the frozen skip encoders
    from safetensors.torch import load_file
    stored = {k.split(".")[0] for k in load_file(str(tmp_path / "adapter" / "adapter.safetensors"))}
    assert {"decoder2", "decoder3", "decoder4", "decoder5", "out"} <= stored
    assert not stored & {"encoder1", "encoder2", "encoder3", "encoder4", "vit"}

    applied = apply_adapter(tmp_path / "adapter", tmp_path / "base.pth", model / "plans.json", tmp_path / "applied")
    out, cls, trainer = logits(applied.parent.parent, x)
    assert trainer == "nnUNetTrainer_UNETR_LoRAPT" and torch.allclose(out, expected, atol=1e-5)

    merged_one = apply_adapter(tmp_path / "adapter", tmp_path / "base.pth", model / "plans.json",
                               tmp_path / "applied_merged", merge=True)
    merged_all = merge_model(model, tmp_path / "merged")
    said = [r.getMessage() for r in caplog.records if r.name == "hippo_peft.nnunet.adapter_files"]
    assert [m.split(" ")[0] for m in said] == ["Wrote", "Wrote", "Wrote", "Merged", "Predict"], said
    assert said[0].startswith(f"Wrote {tmp_path / 'adapter' / 'adapter.safetensors'}: ") and "-m " in said[-1]
    base_keys = set(torch.load(tmp_path / "base.pth", weights_only=False)["network_weights"])
    for folder in (merged_one.parent.parent, merged_all):
        ckpt = torch.load(folder / "fold_all" / "checkpoint_final.pth", weights_only=False)
        assert set(ckpt["network_weights"]) == base_keys and ckpt["trainer_name"] == "nnUNetTrainer_UNETR"
        out, cls, _ = logits(folder, x)
        assert cls.__name__ == "UNETR" and torch.allclose(out, expected, atol=1e-4)


def test_wrong_base_and_existing_outputs_are_refused(tmp_path):
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    export_adapter(model / "fold_all", tmp_path / "adapter")
    other = torch.load(tmp_path / "base.pth", weights_only=False)["network_weights"]
    other["vit.blocks.3.mlp.linear1.weight"] += 1e-3
    torch.save(other, tmp_path / "other_base.pth")
    with pytest.raises(AdapterMismatchError, match="not the weights this lorapt adapter was trained on"):
        apply_adapter(tmp_path / "adapter", tmp_path / "other_base.pth", model / "plans.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_adapter(model / "fold_all", tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="not an nnU-Net model folder"):
        merge_model(tmp_path, tmp_path / "merged")


def test_hyps_merge_into_base_is_refused_with_the_reason(tmp_path):
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_HyPS)
    with pytest.raises(ValueError, match="non-linear"):
        merge_model(model, tmp_path / "merged")
    assert not (tmp_path / "merged" / "fold_all").exists()


def test_cli_reports_errors_without_traceback(tmp_path):
    from hippo_peft.cli import main
    assert main(["export-adapter", str(tmp_path / "nothing" / "fold_0"), "-o", str(tmp_path / "a")]) == 2


def test_a_malformed_fold_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys):
    """A checkpoint_final.pth without the keys nnUNetv2_train writes (edited, or written by another tool) is our
    error (exit 2, one line naming what is missing), not a KeyError's traceback (exit 3)."""
    from hippo_peft.cli import main
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    checkpoint = model / "fold_all" / "checkpoint_final.pth"
    state = torch.load(checkpoint, weights_only=True)
    del state["init_args"]
    torch.save(state, checkpoint)
    assert main(["export-adapter", str(model / "fold_all"), "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "missing init_args" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_a_fold_or_adapter_file_with_another_setting_than_its_trainer_is_refused(tmp_path):
    """A checkpoint or adapter file whose recorded config is not its trainer's (another hippo_peft version, or
    edited) is refused with what to do; no conversion, nothing written."""
    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT_Strict
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT,
                                    adapter_cfg=nnUNetTrainer_UNETR_LoRAPT_Strict.adapter_config())
    with pytest.raises(AdapterMismatchError, match="another hippo_peft version.*Train the fold again"):
        export_adapter(model / "fold_all", tmp_path / "from_fold")
    assert not (tmp_path / "from_fold").exists()
    with pytest.raises(AdapterMismatchError, match="Train the fold again"):
        merge_model(model, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()

    (tmp_path / "good").mkdir()
    good, _ = trained_model_folder(tmp_path / "good", nnUNetTrainer_UNETR_LoRAPT)
    export_adapter(good / "fold_all", tmp_path / "adapter")
    meta_file = tmp_path / "adapter" / "adapter_config.json"
    meta = json.loads(meta_file.read_text())
    for config in (nnUNetTrainer_UNETR_LoRAPT_Strict.adapter_config().to_dict(),
                   {"method": "decoderonly", "rank": 8, "targets": "all", "train_extra": "decoder"}):
        meta_file.write_text(json.dumps({**meta, "config": config}))
        with pytest.raises(AdapterMismatchError, match="another hippo_peft version.*Export the adapter again"):
            apply_adapter(tmp_path / "adapter", tmp_path / "good" / "base.pth", good / "plans.json",
                          tmp_path / "applied")
        assert not (tmp_path / "applied").exists()


def test_decoderonly_is_exactly_decoder_blocks_and_head():
    assert A.make_config("decoderonly").train_extra == "decoder_head"
    assert A.make_config("cnnonly").train_extra == "decoder"
    with pytest.raises(ValueError, match="cnnonly"):
        A.make_config("decoderonly", train_extra="decoder")
