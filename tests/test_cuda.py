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


def test_cuda_one_and_three_dimensional_rules_and_deeplift_equal_cpu():
    import rectgrad

    torch.manual_seed(0)
    nets = {
        (2, 3, 40): torch.nn.Sequential(torch.nn.Conv1d(3, 6, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool1d(2),
                                        torch.nn.Flatten(), torch.nn.Linear(6 * 20, 4)),
        (2, 3, 4, 8, 8): torch.nn.Sequential(torch.nn.Conv3d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                             torch.nn.AdaptiveMaxPool3d((2, 2, 2)), torch.nn.Flatten(),
                                             torch.nn.Linear(6 * 8, 4)),
    }
    for shape, net in nets.items():
        net, x = net.double().eval(), torch.randn(*shape, dtype=torch.float64)
        for method in ("rectgrad_prr", "deeplift"):
            cpu = rectgrad.explain(net, x, target=1, method=method)
            gpu = rectgrad.explain(net.cuda(), x.cuda(), target=1, method=method)
            net.cpu()
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_low_precision_and_resnet(dtype):
    from torchvision.models import resnet50

    model = resnet50(num_classes=10).cuda().to(dtype).eval()
    x = torch.randn(4, 3, 224, 224, device="cuda", dtype=dtype)
    attribution = RectGrad(model).attribute(x, q=98.0, padding_trick=True, prr=True)
    assert attribution.dtype == dtype and attribution.device.type == "cuda"
    assert torch.isfinite(attribution.float()).all() and (attribution > 0).any()


def test_cuda_train_many_deterministic_repeats_bit_for_bit_and_fast_mode_learns_alike():
    from test_evaluation import quadrants

    from rectgrad.train import new_model
    from rectgrad.train_many import train_many

    datasets, seeds = [quadrants(200, 0), quadrants(200, 1)], [3, 4]

    def run(deterministic):
        models = [new_model(d, s) for d, s in zip(datasets, seeds)]
        histories = train_many(models, datasets, seeds, epochs=3, batch_size=25, device="cuda",
                               deterministic=deterministic)
        return [m.state_dict() for m in models], histories

    (first, first_history), (again, _), (_, fast_history) = run(True), run(True), run(False)
    for a, b in zip(first, again):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for exact, fast in zip(first_history, fast_history):  # other cuDNN algorithms: other rounding, same training
        assert fast["loss"][0] == pytest.approx(exact["loss"][0], rel=1e-3)
        assert fast["train_accuracy"][-1] == pytest.approx(exact["train_accuracy"][-1], abs=0.05)


def test_cuda_train_many_stops_and_resumes_bit_for_bit(tmp_path):
    from test_evaluation import quadrants

    from rectgrad.train import new_model
    from rectgrad.train_many import TrainingInterrupted, train_many

    datasets, seeds = [quadrants(100, 0), quadrants(100, 1)], [3, 4]
    straight = [new_model(d, s) for d, s in zip(datasets, seeds)]
    train_many(straight, datasets, seeds, epochs=2, batch_size=25, device="cuda", precision="bf16")
    steps, checkpoint = iter(range(100)), tmp_path / "group.pt"
    models = [new_model(d, s) for d, s in zip(datasets, seeds)]
    with pytest.raises(TrainingInterrupted):  # mid-epoch 2: Adam's fused state (step counts on the GPU) is saved
        train_many(models, datasets, seeds, epochs=2, batch_size=25, device="cuda", precision="bf16",
                   checkpoint=checkpoint, stop=lambda: next(steps) == 6)
    models = [new_model(d, s) for d, s in zip(datasets, seeds)]
    train_many(models, datasets, seeds, epochs=2, batch_size=25, device="cuda", precision="bf16",
               checkpoint=checkpoint)
    for a, b in zip(straight, models):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


def test_cuda_reproduce_smoke_trains_clean_and_patch_models_at_once(tmp_path, monkeypatch):
    from test_reproduce import write_tiny_fashion

    from rectgrad.checkpoint import load_checkpoint
    from rectgrad.cli import main
    from rectgrad.evaluation import pipeline

    calls = []
    grouped = pipeline.train_many
    monkeypatch.setattr(pipeline, "train_many",
                        lambda models, *a, **k: calls.append(len(models)) or grouped(models, *a, **k))
    write_tiny_fashion(tmp_path / "data")
    assert main(["reproduce", "--dataset", "fashion-mnist", "--scale", "smoke", "--data-dir", str(tmp_path / "data"),
                 "--device", "cuda", "--no-progress", "--precision", "bf16", "--nondeterministic",
                 "--out", str(tmp_path / "report")]) == 0
    assert calls == [2]
    clean, clean_info = load_checkpoint(tmp_path / "report" / "work" / "models" / "clean.pt")
    patch, patch_info = load_checkpoint(tmp_path / "report" / "work" / "models" / "patch.pt")
    assert 0 <= clean_info["test_accuracy"] <= 1 and 0 <= patch_info["test_accuracy"] <= 1
    assert not torch.equal(clean.features[0].weight, patch.features[0].weight)  # same start, other data


def test_cuda_roar_kar_builds_the_cpu_datasets():
    from rectgrad.evaluation import roar_kar

    from test_evaluation import roar_inputs

    train, test, maps = roar_inputs()
    seen = {}

    def record(device):
        def train_fn(train_set, test_set, seed):
            for dataset in (train_set, test_set):  # images and labels both on the device that trains
                assert dataset.images.device.type == dataset.labels.device.type == device
            seen.setdefault(device, []).append((train_set.images.cpu(), test_set.images.cpu()))
            return 0.5
        return train_fn

    for device in ("cpu", "cuda"):
        roar_kar(train, test, maps, record(device), fractions=(0.2, 0.6), repeats=1, device=device, progress=False)
    assert len(seen["cpu"]) == len(seen["cuda"]) == 4
    for (a, b), (c, d) in zip(seen["cpu"], seen["cuda"]):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_cuda_a_group_out_of_memory_frees_its_memory_before_its_halves_train():
    from test_evaluation import Counting, roar_inputs

    from rectgrad.evaluation import LocalBackend, roar_kar

    class Holding(Counting):
        def many(self, jobs, checkpoint=None):
            if len(jobs) > 2:
                held = torch.empty(256, 1024, 1024, device="cuda")  # 1 GiB the failed group held
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated, {held.numel()} floats held)")
            self.allocated.append(torch.cuda.memory_allocated())
            return [self(*job) for job in jobs]

    train, test, maps = roar_inputs()
    fn = Holding()
    fn.allocated = []
    baseline = torch.cuda.memory_allocated()
    with pytest.warns(RuntimeWarning, match="out of GPU memory training 4 models at once"):
        roar_kar(train, test, maps, fn, fractions=(0.2, 0.6), repeats=2, backend=LocalBackend(group=4),
                 progress=False)
    assert len(fn.allocated) == 4 and max(fn.allocated) < baseline + 2**29


def test_cuda_ranking_and_random_masks_draw_from_a_cpu_generator_as_on_the_cpu():
    from rectgrad.metrics import random_removal_mask, rank_pixels

    attr = torch.zeros(2, 3, 8, 8)  # all tied: the order is the noise's alone
    cpu = rank_pixels(attr, generator=torch.Generator().manual_seed(0))
    gpu = rank_pixels(attr.cuda(), generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    mask = random_removal_mask((2, 8, 8), 0.3, generator=torch.Generator().manual_seed(0), device="cuda")
    assert mask.device.type == "cuda"
    assert torch.equal(mask.cpu(), random_removal_mask((2, 8, 8), 0.3, generator=torch.Generator().manual_seed(0)))


def test_cuda_auc_and_aoc_of_curves_on_the_gpu_equal_the_cpu_areas():
    from rectgrad.metrics import kar_aoc, roar_auc

    fractions, accuracies = [0.1, 0.3, 0.5, 0.7, 0.9], [0.9, 0.8, 0.6, 0.4, 0.2]
    on_gpu = torch.tensor(accuracies, device="cuda")
    for area in (roar_auc, kar_aoc):
        assert area(fractions, on_gpu) == pytest.approx(area(fractions, accuracies), abs=1e-7)
        assert area(torch.tensor(fractions, device="cuda"), accuracies) == area(fractions, accuracies)
