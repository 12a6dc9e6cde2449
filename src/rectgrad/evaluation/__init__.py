"""The paper's quantitative experiments as reusable functions (Secs. 3 and 5.3).

* :func:`feature_map_occlusion` - Fig. 2: zero background activations of a layer, follow the logit margin.
* :func:`patch_attribution` - Figs. 3, 7: attribution on a training-set random patch.
* :func:`noise_level` - Fig. 8: attribution outside the object mask and total variation.
* :func:`roar_kar` - Fig. 9, Table 1: remove / keep the top pixels, retrain, ROAR AUC / KAR AOC.
* :class:`ResultStore` - resumable results; :func:`reproduce` runs everything (``rectgrad reproduce``).
"""
from rectgrad.evaluation.maps import compute_maps, final_threshold, noise_level, patch_attribution
from rectgrad.evaluation.occlusion import (OcclusionCurve, background_at, conv_activations, correctly_classified,
                                           feature_map_occlusion)
from rectgrad.evaluation.pipeline import METHODS, SCALES, Scale, Settings, reproduce, scale_with
from rectgrad.evaluation.roar import (FRACTIONS, Job, LocalBackend, RayBackend, RoarKarResult, occlude_dataset,
                                      roar_kar)
from rectgrad.evaluation.store import ResultStore

__all__ = ["FRACTIONS", "METHODS", "SCALES", "Job", "LocalBackend", "OcclusionCurve", "RayBackend", "ResultStore",
           "RoarKarResult", "Scale", "Settings", "background_at", "compute_maps", "conv_activations",
           "correctly_classified", "feature_map_occlusion", "final_threshold", "noise_level", "occlude_dataset",
           "patch_attribution", "reproduce", "roar_kar", "scale_with"]
