"""The adaptation methods on the tiny presets of both backbones, as a flat method x backbone matrix: exact start,
merge equivalence, gradients reach every trainable tensor (and nothing else moves), closed-form trainable counts,
bf16 autocast, adapter-only state round trip. Plus the t-SVD itself and agreement with HF peft."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hippo_peft import adapters as A
from hippo_peft.adapters.lorapt import PrincipalTensor
from hippo_peft.adapters.tsvd import t_svd
from hippo_peft.networks import build_network, get_arch, get_preset
from hippo_peft.experiments.synthetic import make_phantom
from tests.conftest import TINY_PATCH, compose, compose_slices, t_product, t_transpose, tiny

PATCH = TINY_PATCH
METHOD_KW = {"lora": dict(rank=4), "dora": dict(rank=4), "pissa": dict(rank=4), "pdora": dict(rank=4),
             "hyps": dict(rank=2, bottleneck=2), "lorapt": dict(rank=1), "headonly": {}, "decoderonly": {},
             "cnnonly": {}}
MATRIX = [(m, a) for a in PATCH for m in A.METHODS]
ADAPTERS = ("lorapt", "hyps", "pdora", "lora", "dora", "pissa")
# The papers' setting (our trainers' default): adapter + CNN decoder blocks + head, on top of the library default
SETTINGS = [(m, a, "none") for m, a in MATRIX] + [(m, a, "decoder_head") for a in PATCH for m in ADAPTERS]
# Documented in the README (Trainers) and in AdapterConfig.train_extra: what the papers' setting trains besides the
# adapter, per backbone; the skip encoders (encoder1-4, SwinUNETR's encoder10) stay frozen.
DECODER_BLOCKS = {"unetr": ("decoder2", "decoder3", "decoder4", "decoder5"),
                  "swinunetr": ("decoder1", "decoder2", "decoder3", "decoder4", "decoder5")}
SKIP_ENCODERS = {"unetr": ("encoder1", "encoder2", "encoder3", "encoder4"),
                 "swinunetr": ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10")}
TRANSFORMER = {"unetr": "vit", "swinunetr": "swinViT"}


def real_batch(arch: str, n: int = 2, seed: int = 0):
    """Phantom T1 crops and labels zero-padded to the patch (z-scored like nnU-Net's preprocessing)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        img, lab = make_phantom(rng)
        img = (img - img.mean()) / img.std()
        pad = [(0, p - s) for s, p in zip(img.shape, PATCH[arch])]
        xs.append(np.pad(img, pad)[None])
        ys.append(np.pad(lab, pad))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("method,arch,extra", SETTINGS)
def test_exact_start_and_merge(method, arch, extra):
    net = tiny(arch).eval()
    x, _ = real_batch(arch, 1)
    base_keys = set(net.state_dict())
    with torch.no_grad():
        y0 = net(x)
        A.inject(net, config_for(method, extra))
        y1 = net(x)
        # move the adapter away from its start so that merge has something to fold
        for p in A.trainable_parameters(net):
            p.add_(0.02 * torch.randn_like(p))
        y2 = net(x)
        A.merge(net)
        y3 = net(x)
    assert rel_err(y1, y0) < 1e-4, "adapted network must start exactly at the pre-trained one"
    if method not in ("headonly",):
        assert rel_err(y2, y0) > 1e-4, "perturbing the trainable tensors changed nothing"
    assert rel_err(y3, y2) < 1e-4, "merged outputs differ from the adapted network's"
    keys = set(net.state_dict())
    if method == "hyps":  # the non-linear serial adapters stay (documented): base keys + *.serial.*
        assert base_keys <= keys and all(".serial." in k for k in keys - base_keys) and keys - base_keys
    else:
        assert keys == base_keys
    assert all(type(m) in (nn.Linear,) or not isinstance(m, nn.Linear) or method == "hyps" for m in net.modules())


def config_for(method: str, extra: str) -> A.AdapterConfig:
    kw = dict(METHOD_KW[method])
    if extra != "none":
        kw["train_extra"] = extra
    return A.make_config(method, **kw)


@pytest.mark.parametrize("method,arch,extra", SETTINGS)
def test_every_trainable_tensor_learns_and_nothing_else_moves(method, arch, extra):
    net = tiny(arch).train()
    A.inject(net, config_for(method, extra))
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    adapter_state = set(A.adapter_state_dict(net))  # trainable + the adapters' own state (HyPS calibration flag)
    frozen = {n: t.detach().clone() for n, t in list(net.named_parameters()) + list(net.named_buffers())
              if n not in adapter_state}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.Adam(A.trainable_parameters(net), lr=1e-3)  # no weight decay: only gradients move
    x, y = real_batch(arch)
    got_grad = set()
    for _ in range(2):  # zero-initialised factors (LoRA's B, HyPS's up) make their partners learn from step 2
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        got_grad |= {n for n, p in trainable.items() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        optimizer.step()
    assert set(trainable) == got_grad, f"no gradient reached {sorted(set(trainable) - got_grad)[:5]}"
    unchanged = [n for n, p in trainable.items() if torch.equal(p.detach(), start[n])]
    assert not unchanged, f"trainable tensors did not change: {unchanged[:5]}"
    moved = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
             if n in frozen and not torch.equal(t.detach(), frozen[n])]
    assert not moved, f"frozen tensors changed: {moved[:5]}"
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in trainable.values()}


def closed_form_count(method: str, arch: str, net: nn.Module) -> int:
    """Trainable numbers from the architecture's sizes alone (not from the adapter's modules)."""
    kw = METHOD_KW[method]
    if method == "headonly":
        return sum(p.numel() for p in net.out.parameters())
    if method == "decoderonly":
        return sum(p.numel() for b in DECODER_BLOCKS[arch] + ("out",) for p in getattr(net, b).parameters())
    if method == "cnnonly":
        enc = net.vit if arch == "unetr" else net.swinViT
        return sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in enc.parameters())
    preset = get_preset(arch, "tiny")
    if arch == "unetr":
        d, m, L = preset["hidden_size"], preset["mlp_dim"], 12
        stages = [(d, m, L)]
    else:
        c = preset["feature_size"]
        stages = [(c * 2 ** s, 4 * c * 2 ** s, depth) for s, depth in enumerate(preset["depths"])]
    if method == "lorapt":
        r = kw["rank"]
        return sum(r * 4 * L * (2 * d + 1) + 2 * r * L * (d + m + 1) for d, m, L in stages)
    shapes = []  # (out, in) of every targeted linear
    for d, m, L in stages:
        attn = [(3 * d, d), (d, d)]
        mlp = [(m, d), (d, m)]
        shapes += (mlp if method == "pdora" else attn + mlp) * L
    r = kw["rank"]
    extra = {"lora": lambda o, i: 0, "pissa": lambda o, i: 0, "dora": lambda o, i: o, "pdora": lambda o, i: o,
             "hyps": lambda o, i: 2 * kw["bottleneck"] * o + kw["bottleneck"] + o}[method]
    return sum(r * (o + i) + extra(o, i) for o, i in shapes)


@pytest.mark.parametrize("method,arch", MATRIX)
def test_trainable_count_is_closed_form(method, arch):
    net = tiny(arch)
    total = sum(p.numel() for p in net.parameters())
    expected = closed_form_count(method, arch, net)
    A.inject(net, A.make_config(method, **METHOD_KW[method]))
    report = A.trainable_report(net)
    assert report.trainable == expected == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert report.total == total
    assert f"{report.trainable:,} of {total:,}" in str(report)


@pytest.mark.parametrize("arch", PATCH)
def test_trainers_train_the_documented_sets(arch):
    """Per backbone, the tensors each kind of trainer trains are exactly the documented ones: the method's own
    (every parameter the adapter adds) + decoder blocks + head by default, + head only for _Strict, decoder blocks +
    head for DecoderOnly, every CNN part for CNNOnly, the head for HeadOnly."""
    from hippo_peft import trainers
    base_names = {n for n, _ in tiny(arch).named_parameters()}
    under = lambda names, blocks: {n for n in names if n.split(".")[0] in blocks}  # noqa: E731
    decoder_head = under(base_names, DECODER_BLOCKS[arch] + ("out",))
    assert decoder_head and not under(decoder_head, SKIP_ENCODERS[arch])
    expected_extra = {"": decoder_head, "_Strict": under(base_names, ("out",))}
    backbone = get_arch(arch).trainer
    for suffix in ("LoRAPT", "HyPS", "PDoRA", "LoRA", "DoRA", "PiSSA"):
        for setting, extra in expected_extra.items():
            trainer = getattr(trainers, f"{backbone}_{suffix}{setting}")
            net = A.inject(tiny(arch), trainer.adapter_config())
            names = {n for n, p in net.named_parameters()}
            trainable = {n for n, p in net.named_parameters() if p.requires_grad}
            added = names - base_names  # the method's own tensors (frozen base weights became buffers)
            assert added and added <= trainable, (trainer.__name__, sorted(added - trainable)[:3])
            assert trainable == added | extra, (trainer.__name__, sorted(trainable ^ (added | extra))[:5])
    baselines = {"DecoderOnly": decoder_head, "HeadOnly": under(base_names, ("out",)),
                 "CNNOnly": {n for n in base_names if n.split(".")[0] != TRANSFORMER[arch]}}
    for suffix, expected in baselines.items():
        net = A.inject(tiny(arch), getattr(trainers, f"{backbone}_{suffix}").adapter_config())
        assert {n for n, p in net.named_parameters() if p.requires_grad} == expected, suffix


@pytest.mark.slow
def test_lorapt_paper_count_matches_the_method_notes():
    # UNETR-base, r = 1: W_sa 48 * (768 + 768 + 1) + 2 * 12 * (3072 + 768 + 1) = 165,960 (methods.md)
    net = build_network("monai.networks.nets.UNETR", get_preset("unetr", "paper"), [16, 16, 16], 1, 3)
    A.inject(net, A.make_config("lorapt", rank=1))
    assert A.trainable_report(net).trainable == 165_960


@pytest.mark.parametrize("method,arch", MATRIX)
def test_bf16_autocast_forward_backward(method, arch):
    # nnU-Net trains under fp16 autocast on GPUs; bf16 on CPU stands in. Decompositions stay float32.
    net = tiny(arch).train()
    base_keys = set(net.state_dict())
    A.inject(net, A.make_config(method, **METHOD_KW[method]))
    x, y = real_batch(arch, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(net(x).float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    for n, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == torch.float32, n
            # Finite for every tensor our adapters add. MONAI's own SwinUNETR decoder convolutions (trained by
            # decoder-only) twice got a non-finite bf16 gradient in full-suite runs only, never in isolation: below
            # our code, so not asserted here.
            if n not in base_keys:
                assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("method,arch", MATRIX)
def test_adapter_state_round_trip_through_safetensors(method, arch, tmp_path):
    from safetensors.torch import load_file, save_file
    net = tiny(arch).eval()
    base = {k: v.clone() for k, v in net.state_dict().items()}
    config = A.make_config(method, **METHOD_KW[method])
    A.inject(net, config)
    with torch.no_grad():
        for p in A.trainable_parameters(net):
            p.add_(0.02 * torch.randn_like(p))
    save_file(A.adapter_state_dict(net), tmp_path / "adapter.safetensors")
    fresh = tiny(arch, seed=1).eval()
    fresh.load_state_dict(base)
    A.inject(fresh, A.config_from_dict(config.to_dict()))
    A.load_adapter_state_dict(fresh, load_file(tmp_path / "adapter.safetensors"))
    x, _ = real_batch(arch, 1)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_adapter_state_of_another_method_is_refused():
    net = A.inject(tiny("unetr"), A.make_config("lora", rank=4))
    other = A.inject(tiny("unetr"), A.make_config("lorapt", rank=1))
    with pytest.raises(ValueError, match="same method"):
        A.load_adapter_state_dict(other, A.adapter_state_dict(net))


# ---- t-SVD ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5, 6), (5, 7, 5), (6, 6, 1), (4, 9, 8)])
def test_tsvd_round_trip_and_real_principal_part(shape):
    torch.manual_seed(0)
    a = torch.randn(*shape)
    u, s, v = t_svd(a)
    assert rel_err(compose(u, s, v), a) < 1e-5
    # compose() agrees with the t-product definition U * S * V^T (explicit f-diagonal S, tensor transpose)
    r = u.shape[1]
    s_full = torch.zeros(r, r, shape[2])
    s_full[range(r), range(r)] = s
    assert rel_err(t_product(t_product(u, s_full), t_transpose(v)), compose(u, s, v)) < 1e-5
    assert rel_err(compose_slices(u, s, v).permute(1, 2, 0), compose(u, s, v)) < 1e-5
    # LoRA-PT's FFT-free slices A @ B_k (circular convolution) agree with the FFT definition
    group = PrincipalTensor(a, min(shape[:2]))
    with torch.no_grad():
        group.U.copy_(u)
        group.S.copy_(s)
        group.V.copy_(v)
        assert rel_err(group.principal_slices().permute(1, 2, 0), compose(u, s, v)) < 1e-5
    # the truncated principal part, computed with the full complex FFT, is real
    u1, s1, v1 = t_svd(a, 1)
    uf, sf, vf = (torch.fft.fft(t.double(), dim=-1) for t in (u1, s1, v1))
    p = torch.fft.ifft(torch.einsum("irk,rk,jrk->ijk", uf, sf, vf.conj()), dim=-1)
    assert float(p.imag.abs().max()) < 1e-6 * float(p.real.abs().max())
    assert rel_err(p.real.float(), compose(u1, s1, v1)) < 1e-5
    # truncation is optimal per Fourier slice: the residual's slices have the discarded singular values
    af = torch.fft.fft(a.double(), dim=-1)
    rf = torch.fft.fft((a - compose(u1, s1, v1)).double(), dim=-1)
    for k in range(shape[2]):
        sv = torch.linalg.svdvals(af[:, :, k])
        assert torch.allclose(torch.linalg.matrix_norm(rf[:, :, k], ord=2), sv[1], rtol=1e-4, atol=1e-5)


def test_tsvd_rank_checked():
    with pytest.raises(ValueError, match="tubal rank"):
        t_svd(torch.randn(3, 4, 5), 4)


# ---- agreement with HF peft ---------------------------------------------------------------------------------

def peft_linear(method: str, lin: nn.Linear, r: int, alpha: float):
    peft = pytest.importorskip("peft", reason="HF peft is a test-only dependency (pip install '.[test]')")

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x)

    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], use_dora=method == "dora",
                          init_lora_weights="pissa" if method == "pissa" else True)
    return peft.get_peft_model(Wrap(), cfg).base_model.model.lin


@pytest.mark.parametrize("method", ["lora", "dora", "pissa"])
def test_matches_hf_peft(method):
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    x = torch.randn(5, 24)
    r, alpha = 4, 8.0
    ours = A.CONFIGS[method](rank=r, alpha=alpha)
    layer_cls = {"lora": A.lora.LoRALinear, "dora": A.dora.DoRALinear, "pissa": A.pissa.PiSSALinear}[method]
    ours_layer = layer_cls.from_linear(copy.deepcopy(lin), ours)
    theirs = peft_linear(method, lin, r, alpha)  # peft rewrites `lin` in place (PiSSA's residual)
    # same start: PiSSA's residual and principal factors agree with peft's (up to the SVD's signs)
    if method == "pissa":
        assert torch.allclose(theirs.base_layer.weight, ours_layer.weight, atol=1e-5)
        assert torch.allclose(theirs.lora_B["default"].weight @ theirs.lora_A["default"].weight,
                              ours_layer.lora_B @ ours_layer.lora_A, atol=1e-5)
    # same factors (peft's, moved off the start) -> same outputs and same gradients
    with torch.no_grad():
        for name in ("lora_A", "lora_B"):
            mod = getattr(theirs, name)["default"]
            mod.weight.add_(0.1 * torch.randn_like(mod.weight))
            getattr(ours_layer, name).copy_(mod.weight)
            ours_layer.weight.copy_(theirs.base_layer.weight)
        if method == "dora":
            mag = theirs.lora_magnitude_vector["default"].weight
            mag.add_(0.1 * torch.rand_like(mag))
            ours_layer.magnitude.copy_(mag)
    y_t, y_o = theirs(x), ours_layer(x)
    assert torch.allclose(y_o, y_t, atol=1e-5)
    y_t.square().sum().backward()
    y_o.square().sum().backward()
    assert torch.allclose(ours_layer.lora_A.grad, theirs.lora_A["default"].weight.grad, atol=1e-4)
    assert torch.allclose(ours_layer.lora_B.grad, theirs.lora_B["default"].weight.grad, atol=1e-4)
    if method == "dora":
        assert torch.allclose(ours_layer.magnitude.grad, theirs.lora_magnitude_vector["default"].weight.grad,
                              atol=1e-4)


# ---- configs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(method="lora", rank=0), "rank must be a positive integer"),
    (dict(method="dora", norm_axis="rows"), "norm_axis must be one of"),
    (dict(method="pdora", train_extra="encoder"), "train_extra must be one of"),
    (dict(method="lorapt", targets="(unclosed"), "valid regular expression"),
    (dict(method="hyps", bottleneck=0), "bottleneck"),
    (dict(method="lora", alpha=0), "alpha must be positive"),
    (dict(method="loha"), "Unknown adaptation method 'loha'. Choose one of: lora"),
    (dict(method="lora", ranks=4), "unknown option"),
])
def test_bad_configs_fail_with_actionable_messages(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.make_config(**kwargs)


def test_rank_too_large_and_unmatched_targets_are_refused():
    with pytest.raises(ValueError, match="rank 64 exceeds"):
        A.inject(tiny("unetr"), A.make_config("pissa", rank=64))
    with pytest.raises(ValueError, match="match no nn.Linear"):
        A.inject(tiny("unetr"), A.make_config("lora", targets=r"decoder\.nothing"))
    net = A.inject(tiny("unetr"), A.make_config("lora", rank=2))
    with pytest.raises(RuntimeError, match="already carries"):
        A.inject(net, A.make_config("lora", rank=2))


def _snapshot(net: nn.Module):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {n: p.requires_grad for n, p in net.named_parameters()},
            {n: type(m) for n, m in net.named_modules()})


@pytest.mark.parametrize("method", ["lora", "pissa", "pdora", "hyps", "lorapt"])
def test_failed_inject_leaves_the_network_untouched(method):
    """A rank error on the last block's (narrowed) MLP must come before anything is frozen or replaced: no
    half-adapted network, and a retry with a rank that fits adapts every target exactly once."""
    net = tiny("unetr")
    last = net.vit.blocks[-1].mlp
    last.linear1, last.linear2 = nn.Linear(48, 2), nn.Linear(2, 48)  # min(out, in) = 2 < rank 4
    net.out.requires_grad_(False)  # a flag inject must not reset either
    keys, grads, types = _snapshot(net)
    with pytest.raises(ValueError, match="rank"):
        A.inject(net, A.make_config(method, rank=4, targets="mlp"))
    after_keys, after_grads, after_types = _snapshot(net)
    assert list(after_keys) == list(keys)
    assert all(torch.equal(after_keys[k], keys[k]) for k in keys)
    assert after_grads == grads and after_types == types
    assert A.adapter_config(net) is None and not hasattr(net, "lorapt_tensors")
    # the retry adapts every target once, as on a fresh network
    A.inject(net, A.make_config(method, rank=2, targets="mlp"))
    fresh = tiny("unetr")
    fresh.vit.blocks[-1].mlp.linear1, fresh.vit.blocks[-1].mlp.linear2 = nn.Linear(48, 2), nn.Linear(2, 48)
    A.inject(fresh, A.make_config(method, rank=2, targets="mlp"))
    assert A.trainable_report(net).tensors == A.trainable_report(fresh).tensors
    assert [type(m) for m in net.modules()] == [type(m) for m in fresh.modules()]


def test_a_network_with_adapter_layers_is_refused_even_without_its_config():
    net = A.inject(tiny("unetr"), A.make_config("lora", rank=2))
    object.__delattr__(net, "hippo_peft_adapter")  # e.g. a copy that lost the attribute
    with pytest.raises(RuntimeError, match="already carries"):
        A.inject(net, A.make_config("lora", rank=2))


def test_config_round_trip_and_help():
    cfg = A.make_config("PDoRA", rank=3, norm_axis="input")
    assert A.config_from_dict(cfg.to_dict()) == cfg
    assert all(A.CONFIGS[m].help()["rank"] for m in A.METHODS)


def test_lorapt_stacks_q_k_v_out_block_by_block():
    net = tiny("unetr")
    d = get_preset("unetr", "tiny")["hidden_size"]
    blocks = net.vit.blocks
    expected = [w for b in blocks for w in (*b.attn.qkv.weight.detach().chunk(3), b.attn.out_proj.weight.detach())]
    up = [b.mlp.linear1.weight.detach().clone() for b in blocks]
    A.inject(net, A.make_config("lorapt", rank=1))
    with torch.no_grad():
        w_sa = getattr(net.lorapt_tensors, f"w{d}x{d}").stacked()
        w_up = net.lorapt_tensors[f"w{2 * d}x{d}"].stacked()
    assert w_sa.shape == (d, d, 4 * len(blocks)) and w_up.shape == (2 * d, d, len(blocks))
    for k, w in enumerate(expected):
        assert torch.allclose(w_sa[:, :, k], w, atol=1e-6), f"slice {k}"
    assert torch.allclose(w_up[:, :, 5], up[5], atol=1e-6)
