"""NC layers under PyTorch's training tools: torch.func (vmap, grad, functional_call), per-sample
gradients with Opacus, torch.compile (max-autotune), gradient checkpointing, AMP with GradScaler and
TorchScript. Every check compares with the plain eager computation, on tiny models."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

from ncnn_onnx import functional as ncf
from ncnn_onnx.nn import NormalizedConv1d, NormalizedConv2d
from reference import assert_parity

# (layer options, input channels): plain NC, grouped with an affine gain, and each of center/scale off.
LAYERS = {
    "default": (dict(), 3),
    "grouped-affine-ws": (dict(groups=2, affine=True, weight_standardization=True), 4),
    "no-scale": (dict(scale=False), 3),
    "no-center": (dict(center=False), 3),
    "plain-conv": (dict(center=False, scale=False), 3),
}


def _model(options, cin, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        NormalizedConv2d(cin, 4, 3, padding=1, **options), nn.ReLU(),
        NormalizedConv2d(4, 4, 3, stride=2, groups=options.get("groups", 1)),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    )


def _data(cin, n=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, cin, 6, 6, generator=gen) * 2 + 1, torch.randint(0, 3, (n,), generator=gen)


def _per_sample_grads_by_loop(model, x, y):
    """The per-sample gradients the slow way: one eager backward per sample."""
    grads = {name: [] for name, _ in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            grads[name].append(p.grad.clone())
    return {name: torch.stack(g) for name, g in grads.items()}


@pytest.mark.parametrize("kind", LAYERS)
def test_vmap_grad_functional_call_give_per_sample_gradients(kind):
    options, cin = LAYERS[kind]
    model = _model(options, cin)
    x, y = _data(cin)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    expected = _per_sample_grads_by_loop(model, x, y)
    assert set(per_sample) == set(expected)
    for name, g in per_sample.items():
        assert g.shape == (len(x), *params[name].shape)
        assert_parity(g, expected[name].double(), torch.float32)
    # and they are per sample, not one gradient repeated
    assert not torch.allclose(per_sample["0.weight"][0], per_sample["0.weight"][1])


@pytest.mark.parametrize("requires_grad", [True, False], ids=["training-path", "inference-op"])
def test_vmap_forward_matches_the_batch(requires_grad):
    model = _model({}, 3)
    model.requires_grad_(requires_grad)
    x, _ = _data(3)
    batched = vmap(lambda xi: model(xi[None])[0])(x)
    with torch.no_grad():
        assert_parity(batched, model(x).double(), torch.float32)


def test_grad_of_functional_matches_backward():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 9, generator=gen)
    w = torch.randn(6, 2, 3, generator=gen)

    def f(w, x):
        return (ncf.normalized_conv1d(x, w, padding=1, groups=2) * torch.arange(9.0)).sum()

    gw = grad(f)(w, x)
    w_eager = w.clone().requires_grad_()
    f(w_eager, x).backward()
    assert_parity(gw, w_eager.grad.double(), torch.float32)


def test_opacus_per_sample_gradients_match_the_loop():
    opacus = pytest.importorskip("opacus")
    model = _model(LAYERS["grouped-affine-ws"][0], 4)
    x, y = _data(4)
    expected = _per_sample_grads_by_loop(model, x, y)
    gsm = opacus.GradSampleModule(model)  # NC layers are not in its registry: it takes the functorch route
    gsm.zero_grad()
    F.cross_entropy(gsm(x), y).backward()  # a mean over the batch: GradSampleModule's default loss_reduction
    for name, p in model.named_parameters():
        assert p.grad_sample is not None, name
        assert_parity(p.grad_sample, expected[name].double(), torch.float32)


def test_opacus_privacy_engine_takes_an_nc_model():
    opacus = pytest.importorskip("opacus")
    from opacus.validators import ModuleValidator

    model = _model({}, 3)
    assert ModuleValidator.validate(model, strict=False) == []
    x, y = _data(3, n=8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = opacus.PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
    )
    before = [p.detach().clone() for p in model.parameters()]
    for xb, yb in loader:
        if len(xb) == 0:  # Poisson sampling may draw an empty batch
            continue
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert engine.get_epsilon(delta=1e-5) > 0


def test_torch_compile_max_autotune_matches_eager_forward_and_backward():
    # ~20-40 s of compilation on 2 busy cores; the default mode is covered by test_nn.py.
    model = nn.Sequential(NormalizedConv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.ReLU())
    compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
    x, _ = _data(3, n=2)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc, ye = compiled(xc), model(xe)
    assert_parity(yc, ye.double(), torch.float32)
    weights = torch.linspace(-1, 1, ye.numel()).reshape(ye.shape)
    (yc * weights).sum().backward()
    wc = model[0].weight.grad.clone()
    model.zero_grad()
    (ye * weights).sum().backward()
    assert_parity(xc.grad, xe.grad.double(), torch.float32)
    assert_parity(wc, model[0].weight.grad.double(), torch.float32)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _model({}, 3)
    x, y = _data(3)
    grads = []
    for use_checkpoint in (False, True):
        model.zero_grad()
        xi = x.clone().requires_grad_()
        if use_checkpoint:
            hidden = checkpoint(model[:3], xi, use_reentrant=False)
        else:
            hidden = model[:3](xi)
        F.cross_entropy(model[3:](hidden), y).backward()
        grads.append([xi.grad] + [p.grad.clone() for p in model.parameters()])
    for plain, ckpt in zip(*grads):
        assert torch.allclose(plain, ckpt, rtol=1e-5, atol=1e-7)


def _float32_gradients(model, x, y) -> list:
    """The parameters' float32 gradients of the loss, with the model's gradients cleared afterwards."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return ref


def test_autocast_bfloat16_training_step_tracks_float32():
    model = _model({}, 3)
    x, y = _data(3)
    ref = _float32_gradients(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = F.cross_entropy(out, y)
    loss.backward()
    for p, r in zip(model.parameters(), ref):
        assert p.grad.dtype == torch.float32
        assert_parity(p.grad, r.double(), torch.bfloat16)


def test_autocast_float16_with_grad_scaler():
    model = _model({}, 3)
    x, y = _data(3)
    ref = _float32_gradients(model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step must not change the weights
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    assert model[0].weight.grad.abs().max() > 100 * ref[0].abs().max()  # scaled by 2^10
    scaler.unscale_(opt)
    for p, r in zip(model.parameters(), ref):
        assert_parity(p.grad, r.double(), torch.float16)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**10  # finite gradients: no skipped step, no back-off


def test_jit_trace_matches_eager_and_still_trains():
    model = _model(LAYERS["grouped-affine-ws"][0], 4)
    x, y = _data(4)
    traced = torch.jit.trace(model, (x,))  # runs the sanity check, which must pass
    nodes = [n.kind() for n in traced.inlined_graph.nodes()]
    assert nodes.count("ncnn_onnx::normalized_conv") == 2
    other, _ = _data(4, seed=5)
    with torch.no_grad():
        assert_parity(traced(other), model(other).double(), torch.float32)
    F.cross_entropy(traced(x), y).backward()
    traced_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for g, p in zip(traced_grads, model.parameters()):
        assert_parity(g, p.grad.double(), torch.float32)


@pytest.mark.parametrize("module", [NormalizedConv2d(3, 4, 3), nn.Sequential(NormalizedConv1d(2, 2, 3), nn.ReLU())])
def test_jit_script_names_the_alternatives(module):
    with pytest.raises(TypeError, match="torch.jit.script") as info:
        torch.jit.script(module)
    for alternative in ("torch.jit.trace", "torch.compile", "ncnn_onnx.export"):
        assert re.search(re.escape(alternative), str(info.value))


def test_torch_compile_recompiles_for_new_input_sizes():
    """A new input size makes torch.compile recompile with dynamic shapes; the NC op stays opaque to it
    (fake kernel for shapes, registered autograd), so that recompile works and still matches eager."""
    torch.manual_seed(5)
    model = nn.Sequential(NormalizedConv2d(3, 8, 3, padding=1), nn.ReLU(), NormalizedConv2d(8, 4, 3, stride=2))
    compiled = torch.compile(model)
    for shape in [(2, 3, 12, 12), (3, 3, 14, 12), (4, 3, 16, 16)]:
        x = torch.randn(*shape)
        xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        yc, ye = compiled(xc), model(xe)
        assert_parity(yc.detach(), ye.detach().double(), torch.float32)
        yc.square().sum().backward()
        ye.square().sum().backward()
        assert_parity(xc.grad, xe.grad.double(), torch.float32)
