"""One registry of methods: a method registered once (a toy here) is a config, an injectable layer, a benchmark and
CLI choice, a report label, a trainer name and a method of the efficiency benchmark -- nothing else to edit."""
import importlib.util
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from hippo_peft import adapters as A
from hippo_peft import cli, trainers
from hippo_peft.experiments import benchmark, benchmark_report
from hippo_peft.adapters.config import LoRAConfig
from hippo_peft.adapters.lora import LoRALinear
from tests.conftest import REPO, TINY_PATCH, tiny


@dataclass
class ToyConfig(LoRAConfig):
    """A toy: LoRA under another name."""

    method: ClassVar[str] = "toy"


@pytest.fixture
def toy():
    spec = A.register_method(A.MethodSpec("toy", ToyConfig, "Toy", "Toy", layer=LoRALinear, lr=5e-4,
                                          summary="Toy: LoRA under another name."))
    yield spec
    A.unregister_method("toy")


def _subparser(parser, name):
    sub = next(a for a in parser._actions if a.choices and name in a.choices)
    return sub.choices[name]


def _option(parser, dest):
    return next(a for a in parser._actions if a.dest == dest)


def _efficiency_benchmark():
    spec = importlib.util.spec_from_file_location("efficiency_benchmark", REPO / "benchmarks" / "adapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_registered_method_is_everywhere(toy):
    assert "toy" in A.CONFIGS and A.make_config("toy", rank=2).rank == 2
    net = tiny("unetr").eval()
    x = torch.randn(1, 1, *TINY_PATCH["unetr"])
    with torch.no_grad():
        before = net(x)
        A.inject(net, A.make_config("toy", rank=2, train_extra="decoder_head"))
        assert torch.allclose(net(x), before, atol=1e-5)  # B = 0: exact start
    assert any(isinstance(m, LoRALinear) for m in net.modules())

    assert {"toy", "toy-strict"} <= set(benchmark.all_methods())
    assert "toy" in benchmark.paper_methods() and "toy" in benchmark.default_methods()
    assert benchmark.parse_method("toy@3e-4,1e-3") == ("toy", "3e-4", "1e-3")
    assert benchmark_report.method_labels()["toy"] == "Toy"
    assert benchmark_report.method_labels()["toy-strict"] == "Toy strict"
    assert benchmark_report.method_label({"method": "toy", "arch": "unetr", "iterations": 5}) == "Toy (unetr)"
    assert trainers.trainer_name("swinunetr", "toy-strict", "short") == "nnUNetTrainer_SwinUNETR_Toy_Strict_short"

    parser = cli.build_parser()
    assert {"toy", "toy-strict"} <= set(_option(_subparser(parser, "demo"), "method").choices)
    methods = _option(_subparser(parser, "benchmark"), "methods")
    assert "toy" in methods.default and "toy-strict" in methods.help

    efficiency = _efficiency_benchmark()
    assert {"toy", "toy-strict"} <= set(efficiency.known_methods())


def test_unregistered_method_is_gone_again(toy):
    A.unregister_method("toy")
    try:
        assert "toy" not in benchmark.all_methods() and "toy" not in benchmark_report.method_labels()
        with pytest.raises(ValueError, match="Unknown adaptation method 'toy'"):
            A.make_config("toy")
        with pytest.raises(benchmark.BenchmarkError, match="Unknown method 'toy'"):
            benchmark.parse_method("toy")
    finally:
        A.register_method(toy)  # the fixture unregisters it


def test_trainer_defaults_come_from_the_registry():
    for spec in A.method_specs():
        cls = getattr(trainers, f"nnUNetTrainer_UNETR_{spec.trainer_suffix}")
        assert (cls.initial_lr_default, cls.decoder_lr_default) == (spec.lr, spec.decoder_lr)
        assert (cls.weight_decay_default, cls.decoder_weight_decay_default) == (spec.weight_decay,
                                                                                spec.decoder_weight_decay)
    assert A.get_method("pdora").lr == 2e-3 and A.get_method("hyps").weight_decay == 2e-5


@pytest.mark.parametrize("change, match", [
    (dict(name="lorapt", trainer_suffix="Other"), "already registered"),
    (dict(trainer_suffix="LoRAPT"), "trainer suffix 'LoRAPT' is taken by 'lorapt'"),
])
def test_clashing_registrations_are_refused(change, match):
    fields = dict(name="toy", config=ToyConfig, label="Toy", trainer_suffix="Toy", summary="", layer=LoRALinear)
    fields.update(change)
    if fields["name"] != "toy":
        fields["config"] = A.CONFIGS[fields["name"]]
    with pytest.raises(ValueError, match=match):
        A.register_method(A.MethodSpec(**fields))
    assert "toy" not in A.CONFIGS


@pytest.mark.parametrize("change, error, match", [
    (dict(config=A.LoRAConfig), ValueError, "says method 'lora'"),
    (dict(config=dict), TypeError, "AdapterConfig subclass"),
    (dict(layer=None), ValueError, "exactly one of layer"),
    (dict(injector=lambda model, config: None), ValueError, "exactly one of layer"),
    (dict(trainer_suffix="To-y"), ValueError, "identifiers"),
])
def test_bad_specs_are_refused(change, error, match):
    fields = dict(name="toy", config=ToyConfig, label="Toy", trainer_suffix="Toy", summary="", layer=LoRALinear)
    fields.update(change)
    with pytest.raises(error, match=match):
        A.MethodSpec(**fields)
