"""The engine on a GPU (skipped without CUDA): same maps as on the CPU, low precision runs."""
import pytest
import torch

from rectgrad import Deconvolution, GuidedBackprop, PaperCNN, RectGrad

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_maps_equal_cpu_maps_in_float64():
    model = PaperCNN().double().eval()
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    for kwargs in ({"q": 98.0}, {"q": 98.0, "prr": True, "padding_trick": True}, {"tau": 0.0}, {"q": 10.0}):
        cpu = RectGrad(model).attribute(x, target=3, **kwargs)
        gpu = RectGrad(model.cuda()).attribute(x.cuda(), target=3, **kwargs)
        model.cpu()
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
    for method in (GuidedBackprop, Deconvolution):
        cpu = method(model).attribute(x, target=3)
        gpu = method(model.cuda()).attribute(x.cuda(), target=3)
        model.cpu()
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_low_precision_and_resnet(dtype):
    from torchvision.models import resnet50

    model = resnet50(num_classes=10).cuda().to(dtype).eval()
    x = torch.randn(4, 3, 224, 224, device="cuda", dtype=dtype)
    attribution = RectGrad(model).attribute(x, q=98.0, padding_trick=True, prr=True)
    assert attribution.dtype == dtype and attribution.device.type == "cuda"
    assert torch.isfinite(attribution.float()).all() and (attribution > 0).any()
