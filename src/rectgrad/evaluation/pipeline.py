"""The paper's quantitative experiments end to end (Secs. 3 and 5.3), resumable: ``rectgrad reproduce``.

Every unit of work (a trained model, a set of attribution maps, an experiment's measurements, one ROAR/KAR
training) is saved in the work folder (:class:`ResultStore`) as soon as it is done and skipped when the
pipeline runs again; :mod:`rectgrad.report` then builds the figures and tables from those files alone.
"""
from __future__ import annotations

import numbers
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from rectgrad._checks import did_you_mean, positive_int
from rectgrad._checks import fractions as check_fractions
from rectgrad.checkpoint import delete_killed_writes, exclusive, load_checkpoint, save_checkpoint
from rectgrad.data import DATASETS, ImageDataset, MaskedImages, RandomPatch, checksum, load_dataset
from rectgrad.data import load_image_folder_masks, load_masked_images, masked_images_folder, object_masks_from_images
from rectgrad.evaluation.maps import compute_maps, noise_level, patch_attribution
from rectgrad.evaluation.occlusion import conv_activations, correctly_classified, feature_map_occlusion
from rectgrad.evaluation.roar import FRACTIONS, LocalBackend, roar_kar
from rectgrad.evaluation.store import CONFIG, UNKNOWN_CONFIG, ResultStore, checked_folder, corrupt, known_methods
from rectgrad.methods import METHOD_NAMES, explain, get_method
from rectgrad.metrics import TIE_NOISE, check_tie_noise, pixel_count
from rectgrad.progress import progress_bar
from rectgrad.train import evaluate, new_model, predict_logits, train_model
from rectgrad.train_many import Retrainer, train_many

#: The estimators of Figs. 7-9 and Table 1 (RectGrad PRR is in Figs. 7-8 of the paper; we also run it in ROAR/KAR).
METHODS = ("random", "rectgrad", "rectgrad_prr", "saliency", "guided_bp", "smoothgrad", "grad_input", "intgrad",
           "deeplift")


@dataclass(frozen=True)
class Scale:
    """How much of the paper's protocol to run. ``None`` image counts mean the whole split.

    The clean and the patch-occluded model train on the first ``model_images`` training images for
    ``model_epochs``; Fig. 7 scores the first ``patch_images`` patched test images; Figs. 2 and 8 use
    ``per_class`` correctly classified masked images per class; Fig. 2 uses ``occlusion_steps`` fractions
    and ``occlusion_orders`` random orders; ROAR/KAR modify the first ``roar_train_images`` training and
    ``roar_test_images`` test images and retrain ``repeats`` times for ``roar_epochs`` per (method, fraction).
    ``hyperparameters`` override attribution defaults (fewer SmoothGrad samples / IntegGrad steps).
    """

    model_images: int | None
    model_epochs: int
    patch_images: int | None
    per_class: int
    occlusion_steps: int
    occlusion_orders: int
    roar_train_images: int | None
    roar_test_images: int | None
    roar_epochs: int
    repeats: int
    fractions: tuple[float, ...] = FRACTIONS
    hyperparameters: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("model_images", "patch_images", "roar_train_images", "roar_test_images"):
            count = getattr(self, name)
            if count is not None and (not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1):
                raise ValueError(f"{name} must be a positive integer or None (all images; --set {name}=null), "
                                 f"got {count!r}")
            object.__setattr__(self, name, None if count is None else int(count))
        for name in ("model_epochs", "per_class", "occlusion_orders", "roar_epochs", "repeats"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))  # (a numpy integer: an int)
        object.__setattr__(self, "occlusion_steps", positive_int("occlusion_steps", self.occlusion_steps))
        if self.occlusion_steps < 2:
            raise ValueError(f"occlusion_steps must be at least 2 (0 and 1 are the curve's ends), got "
                             f"{self.occlusion_steps}")
        fractions = check_fractions(self.fractions)
        if len(fractions) < 2:
            raise ValueError(f"fractions must be at least two (Table 1's ROAR AUC and KAR AOC are areas under the "
                             f"accuracy curve), got {list(fractions)}")
        object.__setattr__(self, "fractions", fractions)
        if not isinstance(self.hyperparameters, dict):
            raise ValueError(f"hyperparameters must map method names to their settings, e.g. "
                             f'{{"smoothgrad": {{"samples": 10}}}}, got {self.hyperparameters!r}')
        for method, values in self.hyperparameters.items():
            try:
                known = get_method(method).defaults
            except ValueError as error:
                raise ValueError(f"hyperparameters: {error}") from None
            unknown = set(values) - set(known) if isinstance(values, dict) else None
            if unknown is None or unknown:
                raise ValueError(f"hyperparameters of {method!r} must map some of {', '.join(known) or 'none'} to "
                                 f"values, got {values!r}")


def scale_with(name: str, overrides: Mapping[str, object] | None = None) -> Scale:
    """The scale ``name`` of :data:`SCALES` with the parameters in ``overrides`` replaced (``rectgrad reproduce
    --set KEY=VALUE``), e.g. ``{"roar_epochs": 10, "repeats": 2}``; each value is checked."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}{did_you_mean(name, SCALES)}; choose one of {', '.join(SCALES)}")
    keys = [f.name for f in fields(Scale)]
    for key in overrides or {}:
        if key not in keys:
            raise ValueError(f"no scale parameter {key!r}{did_you_mean(key, keys)}; the parameters: {', '.join(keys)}")
    scale = replace(SCALES[name], **(overrides or {}))
    if "hyperparameters" in (overrides or {}):
        _try_hyperparameters(scale.hyperparameters)
    return scale


def _try_hyperparameters(hyperparameters: dict) -> None:
    """Each method run once with its ``hyperparameters`` on a tiny model: a bad value (``samples=0``) is refused
    before any training, by the method's own checks, not once the models are trained."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    for method, values in hyperparameters.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (e.g. an all-zero map of the tiny model)
                explain(model, torch.rand(1, 1, 4, 4), target=0, method=method, seed=0, **values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"hyperparameters of {method!r}: {error}") from None


SCALES = {
    # CI: about a minute on two CPU cores; two fractions, one repeat.
    "smoke": Scale(model_images=300, model_epochs=1, patch_images=20, per_class=1, occlusion_steps=3,
                   occlusion_orders=2, roar_train_images=100, roar_test_images=50, roar_epochs=1, repeats=1,
                   fractions=(0.1, 0.9), hyperparameters={"smoothgrad": {"samples": 2}, "intgrad": {"steps": 2}}),
    # <= 30 minutes on two CPU cores: the paper's protocol with fewer images, epochs, repeats, samples.
    "quick": Scale(model_images=20000, model_epochs=2, patch_images=500, per_class=10, occlusion_steps=21,
                   occlusion_orders=10, roar_train_images=5000, roar_test_images=1000, roar_epochs=1, repeats=3,
                   hyperparameters={"smoothgrad": {"samples": 10}, "intgrad": {"steps": 10}}),
    # The paper: all images, 20 epochs, 3 repeats, 100 steps x 50 orders, default SmoothGrad / IntegGrad.
    "paper": Scale(model_images=None, model_epochs=20, patch_images=None, per_class=10, occlusion_steps=100,
                   occlusion_orders=50, roar_train_images=None, roar_test_images=None, roar_epochs=20, repeats=3),
}


@dataclass
class Settings:
    """Where and how to run (not part of the results' configuration)."""

    device: str = "cpu"
    backend: object = None  # LocalBackend (default) or RayBackend for the ROAR/KAR trainings
    retrain_device: str | None = None  # device of the ROAR/KAR trainings (default: ``device``)
    precision: str = "fp32"  # of the ROAR/KAR trainings run several at once (rectgrad.train_many)
    deterministic: bool = True  # cuDNN mode of those trainings (False: its fastest algorithms)
    progress: bool = True

    @property
    def batch_size(self) -> int:
        return 1000 if self.device.startswith("cuda") else 250


def reproduce(dataset: str, scale: str, work_dir, *, data_dir=None, masks_dir=None, download: bool = False,
              methods=METHODS, seed: int = 0, settings: Settings | None = None, image_size: int = 32,
              overrides: Mapping[str, object] | None = None, tie_noise: float = TIE_NOISE) -> ResultStore:
    """Run (or resume) every experiment for ``methods`` on ``dataset`` at ``scale``; return the results.

    ``dataset="folder"`` runs them on your own images in ``data_dir`` (:func:`rectgrad.data.load_image_folder`,
    resized to ``image_size``); Figs. 2 and 8 then use the test images that have an object mask, and are
    skipped when none has. ``overrides`` replace some of the scale's parameters (:func:`scale_with`). A
    ``work_dir`` holding results of other methods, made with this configuration otherwise, keeps them: the run
    adds ``methods`` to the folder's (its ``config.json`` lists them once their results are all in), and the
    results cover them all. ``tie_noise``: the standard deviation of ROAR/KAR's tie-breaking noise
    (:func:`roar_kar`), part of the configuration.
    """
    settings = settings or Settings()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}{did_you_mean(dataset, DATASETS)}; choose one of "
                         f"{', '.join(DATASETS)}")
    spec = scale_with(scale, overrides)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct names among {', '.join(METHOD_NAMES)}, got {list(methods)}")
    tie_noise = check_tie_noise(tie_noise)
    if hasattr(settings.backend, "check_local_instance"):  # (RayBackend: resources it refuses, refused now)
        settings.backend.check_local_instance()
    masks_dir = _masks_folder(dataset, masks_dir, download)  # (before the datasets or any training)
    work = checked_folder(work_dir)

    def read_data() -> tuple:
        train = load_dataset(dataset, "train", data_dir=data_dir, download=download, image_size=image_size,
                             progress=settings.progress)
        test = load_dataset(dataset, "test", data_dir=data_dir, download=download, image_size=image_size,
                            progress=settings.progress)
        for fraction in spec.fractions:  # one rounding to no pixel or all: refused now, not after the models and maps
            pixel_count(fraction, tuple(train.images.shape[-2:]))
        return train, test, _masked_images(dataset, test, masks_dir, data_dir, image_size, settings.progress)

    # A new folder is made once the data is read (a missing dataset leaves none behind); an existing one is locked
    # first (another run using it is refused before the data loads, a download say).
    read = None if work.is_dir() else read_data()
    work.mkdir(parents=True, exist_ok=True)
    with exclusive(work) as locked:  # one run at a time in the folder, from the start
        saved = ResultStore.read_config(work)
        earlier = saved.get("methods") if isinstance(saved, dict) else None
        if isinstance(saved, dict) and "methods" in saved and not (
                isinstance(earlier, list) and all(isinstance(m, str) for m in earlier)):  # (a damaged config.json)
            raise corrupt(work / CONFIG, "'methods' holds no list of method names", UNKNOWN_CONFIG)
        # a method this rectgrad lacks (another version's results): refused as such, before the data is read
        earlier = known_methods(work / CONFIG, earlier, "resume them with that version, or use another folder") \
            if isinstance(earlier, list) else []
        order = list(METHODS) + [m for m in METHOD_NAMES if m not in METHODS]
        # one order; the folder's too
        given, methods = methods, tuple(sorted(set(methods) | set(earlier), key=order.index))
        changed = {k: getattr(spec, k) for k in overrides or {} if getattr(spec, k) != getattr(SCALES[scale], k)}
        settled = {"dataset": dataset, "scale": scale, "parameters": asdict(spec), "methods": list(methods),
                   "seed": seed, "tie_noise": tie_noise, "overrides": changed}
        # one made before tie_noise or overrides were recorded used the defaults
        defaults = {"tie_noise": TIE_NOISE, "overrides": {}}
        # another configuration's folder (another seed, scale, ...) refused before the data is read; the data's
        # record (its checksum) is compared once it is
        ResultStore.check_config(work, settled, growing="methods", defaults=defaults, unknown=("data",))
        train, test, masked = read or read_data()
        # The images and labels, and the object masks read from files: a rerun on changed data (a mended mask) starts
        # anew. (Derived masks follow from the images: a Fashion-MNIST folder made before masks counted resumes.)
        files = masked is not None and dataset != "fashion-mnist"
        data = {"train": len(train), "test": len(test),
                "crc32": checksum(train, test, *[] if masked is None else [masked], masks=files)}
        if dataset == "folder":
            data.update(image_size=image_size, masked=0 if masked is None else len(masked), classes=train.classes)
        # refuses another configuration's folder: by now, one of other data
        store = ResultStore(work_dir, {**settled, "data": data}, growing="methods", defaults=defaults)
        if locked:  # a results folder of this configuration: the temporary files a killed run left go
            delete_killed_writes(work)
        if store.resumed:
            added, kept = [m for m in methods if m not in earlier], [m for m in methods if m not in given]
            print(f"resuming: the finished units of work in {store.folder} are kept, the rest is computed"
                  + (f"; adding {', '.join(added)} to its methods ({', '.join(earlier)})" if added else "")
                  + (f"; its results of {', '.join(kept)} stay in the report" if kept else ""),
                  file=sys.stderr, flush=True)
        run = _Run(store, spec, methods, seed, settings)
        patch = RandomPatch()
        model_train = _first(train, spec.model_images, "model_images")
        clean, patched = run.models({"clean": (model_train, test),
                                     "patch": (patch.apply(model_train), patch.apply(test))})
        if masked is not None:
            chosen = masked.subset(correctly_classified(clean, masked, spec.per_class))
            listed = {"names": chosen.names, "labels": chosen.labels.tolist(), "source": masked.name}
            if not store.has("results/masked.json") or store.load_json("results/masked.json") != listed:
                store.save_json("results/masked.json", listed)  # (a rerun leaves the folder's files as they were)
            if len(chosen):  # else the report says why Figs. 2 and 8 are missing
                run.occlusion(clean, chosen)
                run.noise(clean, chosen)
        run.patch(patched, patch.apply(_first(test, spec.patch_images)), patch)
        run.roar_kar(clean, _first(train, spec.roar_train_images, "roar_train_images"),
                     _first(test, spec.roar_test_images, "roar_test_images"))
        store.record_growth()  # methods added: the folder's configuration lists them once their results are all in
        return store


def _first(dataset: ImageDataset, count: int | None, parameter: str | None = None) -> ImageDataset:
    """The first ``count`` images of ``dataset``; with the scale's ``parameter`` that gives ``count``, a class they
    leave out (one much smaller than the others, in a folder dataset) is a warning naming it: the models trained or
    scored on them never see it."""
    if count is None or count >= len(dataset):
        return dataset
    cut = dataset.subset(slice(0, count))
    lost = sorted(set(dataset.labels.tolist()) - set(cut.labels.tolist()))
    if parameter is not None and lost:
        names = ", ".join(dataset.classes[i] if i < len(dataset.classes) else str(i) for i in lost)
        warnings.warn(f"{parameter}={count}: the first {count} of the {len(dataset)} images hold no image of class "
                      f"{names}; `--set {parameter}=N` with a larger N, or a larger --scale, takes more",
                      stacklevel=2)
    return cut


def _masks_folder(dataset: str, masks_dir, download: bool) -> Path | None:
    """The folder of the paper's masked CIFAR-10 images (:func:`rectgrad.data.masked_images_folder`, downloaded with
    ``download``); None for the other datasets, which take no ``masks_dir``."""
    if dataset != "cifar10":
        if masks_dir is not None:
            raise ValueError("--masks applies to cifar10 only: Fashion-MNIST masks are derived from the images, your "
                             "own images' masks lie beside them (<name>_mask.<ext>)")
        return None
    return masked_images_folder(masks_dir, download)


def _masked_images(dataset: str, test: ImageDataset, masks_dir: Path | None, data_dir, image_size: int,
                   progress: bool) -> MaskedImages | None:
    """CIFAR-10: the paper's masked images (``masks_dir``); Fashion-MNIST: test images with derived masks; your
    own images: the test images with a mask beside them (None if none has)."""
    if dataset == "cifar10":
        masked = load_masked_images(masks_dir)
        if masked.images.shape[1:] != test.images.shape[1:]:
            raise ValueError(f"the masked images in {masks_dir} are {tuple(masked.images.shape[1:])} "
                             f"(channels, height, width), not CIFAR-10's {tuple(test.images.shape[1:])}")
        return masked
    if dataset == "folder":
        return load_image_folder_masks(data_dir, image_size, test, progress=progress)
    return MaskedImages(test.images, test.labels, test.classes, "fashion-mnist test (derived masks)",
                        masks=object_masks_from_images(test.images), names=[f"test_{i}" for i in range(len(test))])


def _saved_model(path: Path) -> torch.nn.Module:
    """A model the run saved; a damaged file (a full disk, a copy cut short) is an error saying what to do."""
    try:
        return load_checkpoint(path)[0]
    except (ValueError, RuntimeError, EOFError) as error:
        raise ValueError(f"{error}; delete {path} and rerun to train it again (the results made with it are kept: "
                         "retrain it on the device and versions that trained it, which give it again bit for bit, or "
                         "start from an empty results folder)") from None


class _Run:
    def __init__(self, store: ResultStore, spec: Scale, methods: tuple[str, ...], seed: int, settings: Settings):
        self.store, self.spec, self.methods, self.seed, self.settings = store, spec, methods, seed, settings

    def models(self, data: dict[str, tuple[ImageDataset, ImageDataset]]) -> list[torch.nn.Module]:
        """The clean and patch-occluded models (Appendix F.2 protocol) for ``{name: (train, test)}``, trained
        once and reused. On a GPU the missing ones train at once (:func:`rectgrad.train_many`, fp32,
        deterministic): a single small model leaves most of the device idle. Either way Ctrl-C or SIGTERM saves the
        training's state and a rerun resumes it."""
        device, epochs = self.settings.device, self.spec.model_epochs
        paths = {name: self.store.path(f"models/{name}.pt") for name in data}
        missing = [name for name, path in paths.items() if not path.is_file()]
        trained = {name: new_model(data[name][0], self.seed) for name in missing}

        def save(name: str, history: dict, sharing: int) -> None:  # its time first: a rerun skips what is saved
            self.store.save_seconds(f"models/{name}", history["seconds"] / sharing)
            test_labels = data[name][1].labels
            save_checkpoint(trained[name], paths[name], name=name, dataset=self.store.config["dataset"],
                            classes=data[name][0].classes, train_images=len(data[name][0]), epochs=epochs,
                            seed=self.seed, test_accuracy=history["test_accuracy"], train_seconds=history["seconds"],
                            majority_accuracy=test_labels.bincount().max().item() / len(test_labels))

        if len(missing) > 1 and device.startswith("cuda"):
            def save_all(histories: list[dict]) -> None:  # before the group's state is deleted: evaluate, then save
                accuracies = [evaluate(trained[name], data[name][1]) for name in missing]
                for name, history, accuracy in zip(missing, histories, accuracies):
                    save(name, {**history, "test_accuracy": accuracy}, len(missing))

            train_many(list(trained.values()), [data[name][0] for name in missing], [self.seed] * len(missing),
                       epochs=epochs, device=device, progress=self.settings.progress,
                       checkpoint=self.store.path(f"models/unfinished-{'-'.join(missing)}.pt"), save=save_all)
        else:
            for name in missing:  # each saved as soon as it is trained; Ctrl-C saves its state, a rerun resumes it
                train_model(trained[name], data[name][0], epochs=epochs, seed=self.seed, device=device,
                            progress=self.settings.progress, test=data[name][1],
                            checkpoint=self.store.path(f"models/unfinished-{name}.pt"),
                            save=lambda history, name=name: save(name, history, 1))
        for stale in self.store.folder.glob("models/unfinished-*.pt"):  # another device's, or kept by a kill
            stale.unlink()
        return [trained[name] if name in trained else _saved_model(path).to(device) for name, path in paths.items()]

    def maps(self, name: str, model: torch.nn.Module, data: ImageDataset, methods=None) -> dict[str, torch.Tensor]:
        """Channel-summed maps of each method for ``data``, explaining the model's predicted classes."""
        methods = self.methods if methods is None else methods
        todo = [m for m in methods if not self.store.has(f"maps/{name}-{m}.pt")]
        if todo:
            inputs = data.inputs()
            targets = predict_logits(model, inputs.to(self.settings.device)).argmax(1).cpu()
            bar = progress_bar(len(todo) * len(data), f"maps {name}", self.settings.progress, unit="image")
            for method in todo:
                if bar is not None:
                    bar.set_postfix_str(method, refresh=False)
                start = time.perf_counter()
                maps = compute_maps(model, inputs, method, targets, batch_size=self.settings.batch_size,
                                    internal_batch_size=10 * self.settings.batch_size, seed=self.seed,
                                    progress=bar, **self.spec.hyperparameters.get(method, {}))
                self.store.save_seconds(f"maps/{name}-{method}", time.perf_counter() - start)  # before the maps
                self.store.save_torch(f"maps/{name}-{method}.pt", maps)
            if bar is not None:
                bar.close()
        return {m: self.store.load_torch(f"maps/{name}-{m}.pt") for m in methods}

    def _holds_every_method(self, key: str) -> bool:
        """The results file ``key`` (one entry per method) is saved, for every method: else it is computed again, from
        the saved maps of the methods it holds (methods added to the folder's)."""
        return self.store.has(key) and set(self.methods) <= set(self.store.load_json(key))

    def occlusion(self, model: torch.nn.Module, chosen: MaskedImages) -> None:
        """Fig. 2 at the output of each convolution's ReLU."""
        layers = conv_activations(model)
        for index, (layer, module) in enumerate(layers.items()):
            key = f"results/occlusion-{layer}.json"
            if self.store.has(key):
                continue
            generator = torch.Generator().manual_seed(self.seed + index)
            if self.settings.progress:
                print(f"feature-map occlusion at {layer} ({index + 1}/{len(layers)})", flush=True)
            start = time.perf_counter()
            curve = feature_map_occlusion(model, module, chosen.inputs(), chosen.masks, chosen.labels,
                                          steps=self.spec.occlusion_steps, orders=self.spec.occlusion_orders,
                                          generator=generator)
            self.store.save_seconds(f"occlusion/{layer}", time.perf_counter() - start)  # before the result
            self.store.save_json(key, {"fractions": curve.fractions.tolist(), "margins": curve.margins.tolist(),
                                       "background_units": curve.background.tolist()})

    def noise(self, model: torch.nn.Module, chosen: MaskedImages) -> None:
        """Fig. 8: attribution outside the object and total variation, with and without the final threshold."""
        if self._holds_every_method("results/noise.json"):
            return
        results = {}
        for method, maps in self.maps("masked", model, chosen).items():
            thresholded = noise_level(maps, method, chosen.masks)
            raw = noise_level(maps, method, chosen.masks, threshold=False)
            results[method] = {**{k: v.tolist() for k, v in thresholded.items()},
                               **{f"{k}_raw": v.tolist() for k, v in raw.items()}}
        self.store.save_json("results/noise.json", results)

    def patch(self, model: torch.nn.Module, data: ImageDataset, patch: RandomPatch) -> None:
        """Figs. 3 and 7: attribution inside the visible 8x8 part of the patch, per test image."""
        if self._holds_every_method("results/patch.json") and self.store.has("results/patch-examples.pt"):
            return  # (either one missing, e.g. deleted as corrupt: both are computed again, from the saved maps)
        region = patch.visible_region(*data.images.shape[2:])
        results, examples = {}, {}
        for method, maps in self.maps("patch", model, data).items():
            inside, inside_raw = (patch_attribution(maps, method, region, threshold=t) for t in (True, False))
            results[method] = {"inside": inside.tolist(), "inside_raw": inside_raw.tolist(),
                               "fraction_raw": (inside_raw / maps.abs().sum((1, 2, 3)).clamp(min=1e-30)).tolist()}
            examples[method] = maps[:4].clone()  # a view would save the whole storage
        self.store.save_torch("results/patch-examples.pt", {"inputs": data.inputs(slice(0, 4)), "maps": examples})
        self.store.save_json("results/patch.json", results)

    def roar_kar(self, model: torch.nn.Module, train: ImageDataset, test: ImageDataset) -> None:
        """Fig. 9 and Table 1: both modes, every method; each training saved as it finishes."""
        ranked = [m for m in self.methods if m != "random"]
        if not self.store.has("results/roar-test.json"):  # the chance level of the images ROAR/KAR score on
            self.store.save_json("results/roar-test.json", {"images": len(test), "majority_accuracy":
                                                            test.labels.bincount().max().item() / len(test)})
        train_maps = self.maps("roar-train", model, train, ranked)
        test_maps = self.maps("roar-test", model, test, ranked)
        attributions = {m: None if m == "random" else (train_maps[m], test_maps[m]) for m in self.methods}
        retrain = Retrainer(epochs=self.spec.roar_epochs, device=self.settings.retrain_device or self.settings.device,
                            precision=self.settings.precision, deterministic=self.settings.deterministic)
        backend = self.settings.backend or LocalBackend()
        device = self.settings.device if isinstance(backend, LocalBackend) else "cpu"  # Ray ships CPU tensors
        for keep in (False, True):
            roar_kar(train, test, attributions, retrain, self.spec.fractions, self.spec.repeats, keep,
                     store=self.store, backend=backend, seed=self.seed, tie_noise=self.store.config["tie_noise"],
                     device=device, progress=self.settings.progress)
