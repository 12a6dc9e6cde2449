"""The paper's picture-based arguments as studies: one function (and one ``rectgrad study`` command) each.

Each study explains a model's predictions for some images, returns a :class:`StudyResult` (tables of
numbers, figures, a markdown summary) and, given ``out``, writes them there as CSV, markdown and PNG.

============== ================================ ===============================================
study          paper                            number added to the picture
============== ================================ ===============================================
threshold      Sec. 5.1, Fig. 4                 sparsity per q; similarity to tau = 0
coherence      Sec. 5.2, Figs. 5a, 12           rank correlation within vs across classes
adversarial    Sec. 5.2, Figs. 5b, 13           map change under FGSM vs under random noise
layers         Sec. 5.2, Figs. 6, 11            background share of attribution per layer
feature_maps   Sec. 3, Fig. 10                  active units on the background per layer
rules          App. B, Fig. 14                  the B.2 toy; sparsity, similarity to PR1
============== ================================ ===============================================
"""
from rectgrad.studies._common import (COMPARED, Images, StudyResult, images_from_dataset, images_from_files,
                                      spearman)
from rectgrad.studies.adversarial import adversarial, fgsm
from rectgrad.studies.coherence import coherence
from rectgrad.studies.feature_maps import feature_maps
from rectgrad.studies.layers import layers
from rectgrad.studies.rules import rules, toy_b2
from rectgrad.studies.threshold import threshold

STUDIES = {"threshold": threshold, "coherence": coherence, "adversarial": adversarial, "layers": layers,
           "feature-maps": feature_maps, "rules": rules}

__all__ = ["COMPARED", "Images", "STUDIES", "StudyResult", "adversarial", "coherence", "feature_maps", "fgsm",
           "images_from_dataset", "images_from_files", "layers", "rules", "spearman", "threshold", "toy_b2"]
