"""The engine on real architectures (random weights): every activation call follows the rule."""
import pytest
import torch
from torch import nn

from rectgrad import GuidedBackprop, RectGrad
from rectgrad.engine import Options, Rule, RuleMode


def activation_module_calls(model, x, kinds) -> int:
    """Number of forward calls of activation modules of the given kinds (reused modules count each time)."""
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return len(calls)


def engine_sites(model, x) -> int:
    mode = RuleMode(Options(rule=Rule(q=98.0)))
    with torch.enable_grad(), mode:
        model(x.detach().requires_grad_())
    return len(mode.sites)


def test_resnet18_reused_inplace_relus():
    from torchvision.models import resnet18

    model = resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 128, 128)  # 4 x 4 maps in layer4: the padding trick keeps their inside
    assert engine_sites(model, x) == activation_module_calls(model, x, nn.ReLU) == 17
    rect = RectGrad(model).attribute(x, target=[3, 4], tau=0.0)
    guided = GuidedBackprop(model).attribute(x, target=[3, 4])
    torch.testing.assert_close(rect, (guided * x).clamp(min=0))
    q98 = RectGrad(model).attribute(x, target=[3, 4], q=98.0, padding_trick=True, prr=True)
    assert q98.shape == x.shape and (q98 > 0).any() and not torch.equal(q98, rect)
    assert torch.count_nonzero(q98) < torch.count_nonzero(rect)


def test_inception_v4_the_papers_model():
    timm = pytest.importorskip("timm")
    model = timm.create_model("inception_v4", pretrained=False, num_classes=1001).eval()
    x = torch.randn(1, 3, 299, 299)
    assert engine_sites(model, x) == activation_module_calls(model, x, nn.ReLU) > 100
    attribution = RectGrad(model).attribute(x, q=98.0, padding_trick=True)
    assert attribution.shape == x.shape and (attribution > 0).any()


def test_efficientnet_lite0_relu6():
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0").eval()
    x = torch.randn(2, 3, 96, 96)
    assert engine_sites(model, x) == activation_module_calls(model, x, nn.ReLU6) > 10
    attribution = RectGrad(model).attribute(x, q=98.0)
    assert attribution.shape == x.shape and (attribution > 0).any()
    x_ = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(model(x_)[:, 0].sum(), x_)
    guided = GuidedBackprop(model).attribute(x, target=0)
    assert (guided - plain).abs().max() > 0.1 * plain.abs().max()  # random weights: tiny gradients, compare relatively


def test_mobilenet_v3_hardswish_and_relu():
    from torchvision.models import mobilenet_v3_small

    model = mobilenet_v3_small(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    assert engine_sites(model, x) == activation_module_calls(model, x, (nn.ReLU, nn.Hardswish)) > 20
    attribution = RectGrad(model).attribute(x, q=98.0)
    assert attribution.shape == x.shape and (attribution > 0).any()


@pytest.mark.parametrize("name", ["densenet121", "googlenet", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5",
                                  "efficientnet-lite0"])
def test_modified_gradients_follow_every_operation_of_common_cnns(name):
    # DeepLIFT and eps-LRP pass only operations known to be linear: no CNN built of them may be refused
    import torchvision

    from rectgrad import explain

    if name == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(name)
    else:
        extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        model = getattr(torchvision.models, name)(num_classes=10, **extra)
    x = torch.randn(2, 3, 64, 64)
    for method in ("deeplift", "eps_lrp"):
        maps = explain(model.eval(), x, target=1, method=method)
        assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0
