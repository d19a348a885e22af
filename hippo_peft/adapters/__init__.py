"""Parameter-efficient adaptation of MONAI UNETR / SwinUNETR: LoRA-PT, HyPS, PDoRA and the LoRA, DoRA, PiSSA,
head-only, decoder-only and CNN-only baselines, on one low-rank core (:mod:`.core`).

    config = make_config("lorapt", rank=1)
    inject(net, config)           # after loading the pre-trained weights
    trainable_report(net)         # trainable X of Y (Z %)
    merge(net)                    # back to plain nn.Linear weights
"""
from hippo_peft.adapters import baselines, dora, hyps, lora, lorapt, pdora, pissa
from hippo_peft.adapters.config import (CONFIGS, TRAIN_EXTRA, AdapterConfig, CNNOnlyConfig, DecoderOnlyConfig,
                                        DoRAConfig, HeadOnlyConfig, HyPSConfig, LoRAConfig, LoRAPTConfig, PDoRAConfig,
                                        PiSSAConfig, config_from_dict, make_config)
from hippo_peft.adapters.registry import MethodSpec, get_method, method_specs, register_method, unregister_method
from hippo_peft.adapters.model import (TrainableReport, adapter_config, adapter_state_dict, base_fingerprint,
                                       inject, injected_fingerprint, load_adapter_state_dict, merge,
                                       trainable_parameters, trainable_report)

# One registration per built-in method; this order is the order of every method list (CLI, benchmark, report).
for _spec in (lorapt.SPEC, hyps.SPEC, pdora.SPEC, lora.SPEC, dora.SPEC, pissa.SPEC, *baselines.SPECS):
    register_method(_spec)

METHODS = tuple(CONFIGS)  # the built-in methods (a method registered later is in method_specs())

__all__ = ["METHODS", "CONFIGS", "AdapterConfig", "LoRAConfig", "DoRAConfig", "PiSSAConfig", "PDoRAConfig",
           "HyPSConfig", "LoRAPTConfig", "HeadOnlyConfig", "DecoderOnlyConfig", "CNNOnlyConfig", "TRAIN_EXTRA",
           "make_config", "config_from_dict", "MethodSpec", "register_method", "unregister_method", "get_method",
           "method_specs",
           "inject", "merge", "trainable_report", "trainable_parameters", "adapter_state_dict",
           "load_adapter_state_dict", "adapter_config", "TrainableReport", "base_fingerprint", "injected_fingerprint"]
