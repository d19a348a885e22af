"""The demo's transfer workflow, end to end in subprocesses: phantom source (2 channels, 1 class) -> target
(1 channel, 2 classes) with the source's patch size -> nnUNetv2_train -pretrained_weights -> nnUNetv2_predict."""
import json
from pathlib import Path

import pytest

from hippo_peft.experiments.demo import SOURCE_ID, TARGET_ID, run_demo


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_transfer_workflow(tmp_path, nnunet_env, monkeypatch):
    for key in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc", "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, nnunet_env[key])
    work = tmp_path / "demo"
    result = run_demo(workdir=str(work), preset="tiny", n_source=4, n_train=4, n_test=2)
    assert set(result["dice"]) == {"Anterior", "Posterior", "Anterior+Posterior"}
    assert result["method"] == "lorapt" and result["trainer"] == "nnUNetTrainer_UNETR_LoRAPT_short"
    # the papers' setting: adapter + CNN decoder blocks + head (~22 % of the tiny UNETR, whose decoder is large
    # next to its 4-layer transformer)
    assert 0 < result["trainable"]["trainable"] < 0.3 * result["trainable"]["total"]
    assert all(0.0 <= v <= 1.0 for v in result["dice"].values())
    assert json.loads((work / "demo_results.json").read_text())["dice"] == result["dice"]

    pre = work / "nnUNet_preprocessed"
    plans = {d: json.loads(next((pre).glob(f"Dataset{d}_*/nnUNetPlans_UNETR_tiny.json")).read_text())
             for d in (SOURCE_ID, TARGET_ID)}
    patches = {d: p["configurations"]["3d_fullres"]["patch_size"] for d, p in plans.items()}
    assert patches[SOURCE_ID] == patches[TARGET_ID]  # UNETR transfer needs the source's patch size

    report_file = next(Path(work / "nnUNet_results").glob(f"Dataset{TARGET_ID}_*/*/fold_all/"
                                                           "pretrained_weights_report.json"))
    report = json.loads(report_file.read_text())
    adapted = {k: why for k, why in report["adapted"]}
    assert adapted["vit.patch_embedding.patch_embeddings.weight"] == "input channels 2 -> 1"
    # the source has one class ('structure'): both target classes start from its row (the head rules)
    assert not report["reinitialised"] and {k for k in ("out.conv.conv.weight", "out.conv.conv.bias")
                                            if adapted.get(k) == "head rows from the source's head: 3 of 3"} == {
        "out.conv.conv.weight", "out.conv.conv.bias"}, report["adapted"]
    assert sum("from the source's one foreground class 'structure'" in line for line in report["head"]) == 2
    assert report["fraction"] > 0.99 and not report["skipped"]
    assert len(list((work / "predictions").glob("*.nii.gz"))) == 2
