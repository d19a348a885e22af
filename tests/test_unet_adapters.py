"""The methods on nnU-Net's own U-Nets (PlainConvUNet, ResidualEncoderUNet from dynamic_network_architectures), as a
flat method x network matrix: exact start, merge back to plain convs, the forward really adapted (the
``ConvDropoutNormReLU.all_modules`` trap), gradients only where they should be, closed-form trainable counts, bf16
autocast, adapter-only state round trip; the order-p t-SVD; agreement with HF peft's conv LoRA / DoRA."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hippo_peft import adapters as A
from hippo_peft.adapters.tsvd import t_product_nd, t_svd, t_svd_nd

ADAPTERS = ("lorapt", "hyps", "pdora", "lora", "dora", "pissa")
BASELINES = ("decoderonly", "headonly")
NETS = ("plain", "resenc", "plain2d", "aniso")  # 3d, residual encoder, nnU-Net's 2d configuration, (1, 3, 3) kernels
METHOD_KW = {"lora": dict(rank=2), "dora": dict(rank=2), "pissa": dict(rank=2), "pdora": dict(rank=2, targets="all"),
             "hyps": dict(rank=2, bottleneck=2), "lorapt": dict(rank=1), "headonly": {}, "decoderonly": {}}
MATRIX = [(m, n) for n in NETS for m in ADAPTERS + BASELINES]


def tiny_unet(kind: str, seed: int = 0) -> nn.Module:
    """A 3-stage U-Net as nnU-Net builds it (instance norm with affine, leaky ReLU, deep supervision)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
    torch.manual_seed(seed)
    two_d = kind == "plain2d"
    kw = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv2d if two_d else nn.Conv3d,
              kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]] if kind == "aniso" else 3,
              strides=[1, 2, 2] if kind != "aniso" else [[1, 1, 1], [1, 2, 2], [2, 2, 2]], num_classes=3,
              norm_op=nn.InstanceNorm2d if two_d else nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
              nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    if kind == "resenc":
        return ResidualEncoderUNet(n_blocks_per_stage=[1, 2, 2], n_conv_per_stage_decoder=1, **kw)
    return PlainConvUNet(n_conv_per_stage=2, n_conv_per_stage_decoder=2, **kw)


def config_for(method: str, extra: str = "decoder_head") -> A.AdapterConfig:
    kw = dict(METHOD_KW[method])
    if method not in BASELINES:
        kw["train_extra"] = extra
    return A.make_config(method, **kw)


def batch(kind: str, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, *([16, 16] if kind == "plain2d" else [16, 16, 16]), generator=g)
    y = ((x > 0.5).long() + (x > 1.2).long())[:, 0]  # three classes the net can learn from the intensity
    return x, y


def outputs(net, x):
    """Every deep-supervision output, flattened into one vector."""
    return torch.cat([o.flatten() for o in net(x)])


def encoder_convs(net):
    return [(n, m) for n, m in net.named_modules() if n.startswith("encoder.") and isinstance(m, (nn.Conv2d, nn.Conv3d))]


@pytest.mark.parametrize("method,kind", MATRIX)
def test_exact_start_and_merge_back_to_plain_convs(method, kind):
    net = tiny_unet(kind).eval()
    x, _ = batch(kind, 1)
    base_keys = set(net.state_dict())
    with torch.no_grad():
        y0 = outputs(net, x)
        A.inject(net, config_for(method))
        y1 = outputs(net, x)
        for p in A.trainable_parameters(net):
            p.add_(0.05 * torch.randn_like(p))
        y2 = outputs(net, x)
        A.merge(net)
        y3 = outputs(net, x)
    scale = y0.abs().max()
    assert (y1 - y0).abs().max() < 1e-4 * scale, "the adapted U-Net must start exactly at the pre-trained one"
    assert (y2 - y0).abs().max() > 1e-3 * scale, "perturbing the trainable tensors changed nothing"
    assert (y3 - y2).abs().max() < 1e-4 * scale, "the merged U-Net's outputs differ from the adapted one's"
    keys = set(net.state_dict())
    if method == "hyps":  # the serial adapters stay (as on UNETR): base keys + *.serial.*
        assert base_keys <= keys and keys - base_keys and all(".serial." in k for k in keys - base_keys)
    else:
        assert keys == base_keys
    for block in net.modules():  # merged: conv and the entry its forward runs are one plain conv again
        if hasattr(block, "all_modules") and hasattr(block, "conv"):
            assert block.all_modules[0] is block.conv and isinstance(block.conv, (nn.Conv2d, nn.Conv3d))


@pytest.mark.parametrize("method,kind", [(m, n) for n in NETS for m in ADAPTERS])
def test_the_forward_runs_the_adapter_not_a_stale_conv(method, kind):
    """nnU-Net's ConvDropoutNormReLU runs ``all_modules``, which holds the conv a second time: changing only the
    adapter's own tensors must change the output, and every reference must be the adapted layer."""
    net = A.inject(tiny_unet(kind).eval(), config_for(method, "none"))
    blocks = [b for b in net.encoder.modules() if hasattr(b, "all_modules") and hasattr(b, "conv")]
    assert blocks
    for block in blocks:
        assert block.all_modules[0] is block.conv, "conv and all_modules[0] must stay one module"
        assert not isinstance(block.conv, (nn.Conv2d, nn.Conv3d)), "an encoder conv was left unadapted"
    x, _ = batch(kind, 1)
    with torch.no_grad():
        y0 = outputs(net, x)
        layers = [m for m in net.modules() if getattr(m, "trainable_names", ())]
        assert layers, "no adapter layer in the network"
        for layer in layers:
            for name in layer.trainable_names:
                t = layer.get_parameter(name)
                t.add_(0.1 * torch.randn_like(t))
        assert (outputs(net, x) - y0).abs().max() > 1e-3 * y0.abs().max()


@pytest.mark.parametrize("method,kind", MATRIX)
def test_gradients_reach_every_trainable_tensor_and_nothing_else_moves(method, kind):
    net = tiny_unet(kind).train()
    A.inject(net, config_for(method))
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    adapter_state = set(A.adapter_state_dict(net))
    frozen = {n: t.detach().clone() for n, t in list(net.named_parameters()) + list(net.named_buffers())
              if n not in adapter_state}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.Adam(A.trainable_parameters(net), lr=1e-3)
    x, y = batch(kind)
    got_grad = set()
    for _ in range(2):  # zero-initialised factors make their partners learn from step 2
        optimizer.zero_grad()
        F.cross_entropy(net(x)[0], y).backward()
        got_grad |= {n for n, p in trainable.items() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        optimizer.step()
    # deep supervision: the lower-resolution segmentation layers get no gradient from the full-resolution loss
    expected = {n for n in trainable if not (n.startswith("decoder.seg_layers.") and not n.startswith(
        f"decoder.seg_layers.{len(net.decoder.seg_layers) - 1}."))}
    assert expected <= got_grad, f"no gradient reached {sorted(expected - got_grad)[:5]}"
    assert not [n for n in expected if torch.equal(trainable[n].detach(), start[n])]
    moved = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
             if n in frozen and not torch.equal(t.detach(), frozen[n])]
    assert not moved, f"frozen tensors changed: {moved[:5]}"
    # what trains outside the adapter: decoder stages, transposed convs, segmentation layers; the encoder's
    # norms and every encoder conv stay frozen
    outside = {n for n in trainable if not any(n.endswith("." + t) for t in _adapter_names(net))}
    head_only = method == "headonly"
    assert all(n.startswith("decoder.seg_layers." if head_only else ("decoder.stages.", "decoder.transpconvs.",
                                                                     "decoder.seg_layers.")) for n in outside)
    assert not any(n.startswith("encoder.") for n in outside)


def _adapter_names(net):
    return {t for m in net.modules() for t in getattr(m, "trainable_names", ())}


def closed_form_count(method: str, net: nn.Module) -> int:
    """Trainable numbers of the adapter alone from the encoder convs' shapes (settings 'none')."""
    kw = METHOD_KW[method]
    total = 0
    for _, conv in encoder_convs(net):
        out_c, in_c, *k = conv.weight.shape
        taps = int(torch.tensor(k).prod())
        r = kw.get("rank", 0)
        if method == "lorapt":
            total += r * taps * (out_c + in_c + 1)
        else:
            total += r * (out_c + in_c * taps) + {"lora": 0, "pissa": 0, "dora": out_c, "pdora": out_c,
                                                   "hyps": 2 * kw.get("bottleneck", 0) * out_c
                                                   + kw.get("bottleneck", 0) + out_c}[method]
    return total


@pytest.mark.parametrize("method,kind", [(m, n) for n in NETS for m in ADAPTERS])
def test_trainable_count_is_closed_form(method, kind):
    net = tiny_unet(kind)
    total = sum(p.numel() for p in net.parameters())
    expected = closed_form_count(method, net)
    A.inject(net, config_for(method, "none"))
    report = A.trainable_report(net)
    assert report.trainable == expected and report.total == total


def test_lorapt_count_of_a_320_channel_conv_matches_the_method_notes():
    # r * k^3 * (C_out + C_in + 1) = 27 * 641 = 17,307 for a 320 -> 320 conv at r = 1 (methods.md)
    layer = A.lorapt.LoRAPTConv.from_conv(nn.Conv3d(320, 320, 3, padding=1, bias=False), A.make_config("lorapt"))
    assert sum(getattr(layer, n).numel() for n in layer.trainable_names) == 17_307


@pytest.mark.parametrize("method,kind", MATRIX)
def test_bf16_autocast_forward_backward(method, kind):
    net = tiny_unet(kind).train()
    A.inject(net, config_for(method))
    x, y = batch(kind, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(net(x)[0].float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    full_res = f"decoder.seg_layers.{len(net.decoder.seg_layers) - 1}."
    for n, p in net.named_parameters():
        if p.requires_grad and not (n.startswith("decoder.seg_layers.") and not n.startswith(full_res)):
            assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("method,kind", [(m, n) for n in NETS for m in ADAPTERS])
def test_adapter_state_round_trip_through_safetensors(method, kind, tmp_path):
    from safetensors.torch import load_file, save_file
    net = tiny_unet(kind).eval()
    base = copy.deepcopy(net.state_dict())
    config = config_for(method)
    A.inject(net, config)
    with torch.no_grad():
        for p in A.trainable_parameters(net):
            p.add_(0.05 * torch.randn_like(p))
    save_file(A.adapter_state_dict(net), tmp_path / "adapter.safetensors")
    fresh = tiny_unet(kind, seed=1).eval()
    fresh.load_state_dict(base)
    A.inject(fresh, A.config_from_dict(config.to_dict()))
    A.load_adapter_state_dict(fresh, load_file(tmp_path / "adapter.safetensors"))
    x, _ = batch(kind, 1)
    with torch.no_grad():
        assert torch.equal(outputs(fresh, x), outputs(net, x))


def test_transformer_only_targets_and_methods_are_refused_on_a_unet():
    with pytest.raises(ValueError, match="targets 'mlp' names transformer linears.*use targets 'all'"):
        A.inject(tiny_unet("plain"), A.make_config("pdora", rank=2))  # PDoRA's default targets are 'mlp'
    spec = A.MethodSpec("toylinear", type("ToyConfig", (A.LoRAConfig,), {"method": "toylinear"}), "toy", "Toy",
                        layer=A.lora.LoRALinear, summary="a linear-only method")
    A.register_method(spec)
    try:
        net = tiny_unet("plain")
        before = copy.deepcopy(net.state_dict())
        with pytest.raises(ValueError, match="'toylinear' has no conv layer"):
            A.inject(net, A.make_config("toylinear", rank=2))
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    finally:
        A.unregister_method("toylinear")
    with pytest.raises(ValueError, match="tubal rank 2 exceeds min\\(C_out, C_in\\) = 1"):
        A.inject(tiny_unet("plain"), A.make_config("lorapt", rank=2))  # the first conv has one input channel


# ---- order-p t-SVD -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 5, 3, 3, 3), (4, 7, 2, 3, 4), (5, 5, 1, 1, 1), (3, 6, 3, 1, 2)])
def test_order_p_tsvd_is_exact_at_full_rank_and_best_per_frequency(shape):
    torch.manual_seed(0)
    a = torch.randn(shape, dtype=torch.float64)
    full = min(shape[:2])
    u, s, v = t_svd_nd(a, full)
    assert u.dtype == s.dtype == v.dtype == torch.float32 and not u.is_complex()
    assert torch.allclose(t_product_nd(u.double(), s.double(), v.double()), a, atol=1e-5)
    rank = 2
    u, s, v = t_svd_nd(a, rank)
    p = t_product_nd(u.double(), s.double(), v.double())
    dims = tuple(range(2, a.dim()))

    def slice_svals(t):
        return torch.linalg.svdvals(torch.fft.fftn(t, dim=dims).reshape(*shape[:2], -1).permute(2, 0, 1))

    # every frequency's residual is exactly the tail of that slice's spectrum (Eckart-Young per slice)
    assert torch.allclose(slice_svals(a - p)[:, :full - rank], slice_svals(a)[:, rank:], atol=1e-5)


def test_order_p_tsvd_of_a_third_order_tensor_is_the_tsvd():
    torch.manual_seed(1)
    a = torch.randn(6, 4, 5, dtype=torch.float64)
    ours = t_product_nd(*(t.double() for t in t_svd_nd(a, 2)))
    theirs = t_product_nd(*(t.double() for t in t_svd(a, 2)))
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_lorapt_on_a_1x1x1_conv_is_the_svd_of_its_matrix():
    """With one tap the t-SVD is the matrix SVD: LoRA-PT = PiSSA with its singular values kept apart."""
    conv = nn.Conv3d(6, 5, 1, bias=False)
    layer = A.lorapt.LoRAPTConv.from_conv(conv, A.make_config("lorapt", rank=2))
    w = conv.weight.detach().reshape(5, 6).double()
    u, s, vh = torch.linalg.svd(w)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    assert torch.allclose(layer.principal().reshape(5, 6).double(), best, atol=1e-5)


# ---- agreement with HF peft's conv layers ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_conv_lora_and_dora_match_hf_peft(method):
    peft = pytest.importorskip("peft", reason="HF peft is a test-only dependency (pip install '.[test]')")
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 6, 3, stride=2, padding=1, bias=True)
    x = torch.randn(2, 3, 9, 9, 9)
    r, alpha = 2, 4.0
    ours = getattr(A, method).__dict__[f"{'LoRA' if method == 'lora' else 'DoRA'}Conv"].from_conv(
        copy.deepcopy(conv), A.CONFIGS[method](rank=r, alpha=alpha))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x)

    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["conv"], use_dora=method == "dora")
    theirs = peft.get_peft_model(Wrap(), cfg).base_model.model.conv
    with torch.no_grad():  # peft's factors moved off the start, copied into ours
        for name in ("lora_A", "lora_B"):
            mod = getattr(theirs, name)["default"]
            mod.weight.add_(0.1 * torch.randn_like(mod.weight))
            getattr(ours, name).copy_(mod.weight.reshape(getattr(ours, name).shape))
        if method == "dora":
            mag = theirs.lora_magnitude_vector["default"].weight
            mag.add_(0.1 * torch.rand_like(mag))
            ours.magnitude.copy_(mag.reshape(-1))
    y_t, y_o = theirs(x), ours(x)
    assert torch.allclose(y_o, y_t, atol=1e-5)
    y_t.square().sum().backward()
    y_o.square().sum().backward()
    assert torch.allclose(ours.lora_A.grad, theirs.lora_A["default"].weight.grad.reshape(ours.lora_A.shape),
                          atol=1e-4)
    assert torch.allclose(ours.lora_B.grad, theirs.lora_B["default"].weight.grad.reshape(ours.lora_B.shape),
                          atol=1e-4)
    if method == "dora":
        assert torch.allclose(ours.magnitude.grad, theirs.lora_magnitude_vector["default"].weight.grad.reshape(-1),
                              atol=1e-4)


@pytest.mark.parametrize("method", ["lora", "pissa", "hyps"])
def test_factored_training_forward_equals_the_merged_kernel(method):
    """LoRA, PiSSA and HyPS train in HF peft's factored form and infer with the merged kernel: the same outputs."""
    layer = A.get_method(method).conv_layer.from_conv(nn.Conv3d(3, 6, 3, stride=2, padding=1),
                                                     A.make_config(method, rank=2))
    with torch.no_grad():
        for name in layer.trainable_names:
            t = layer.get_parameter(name)
            t.add_(0.1 * torch.randn_like(t))
    layer.eval()  # HyPS: no calibration, no dropout
    x = torch.randn(2, 3, 9, 9, 9)
    factored = layer(x)
    with torch.no_grad():
        merged = layer(x)
    assert factored.requires_grad and torch.allclose(factored, merged, atol=1e-5)
