"""Pure torch functions: kernels, spectra and the diversity scores computed from them."""

from diversity_callbacks.functional.clip_score import embedding_clip_score
from diversity_callbacks.functional.conditional_vendi import (
    conditional_vendi_score,
    information_vendi_score,
)
from diversity_callbacks.functional.kernels import (
    Kernel,
    RandomFourierFeatures,
    gaussian_kernel,
    normalize_rows,
    random_fourier_features,
    random_fourier_frequencies,
    resolve_kernel,
)
from diversity_callbacks.functional.lexical import distinct_n, self_bleu
from diversity_callbacks.functional.memorization import (
    NearestNeighbours,
    authenticity,
    calibrated_l2,
    copy_rate,
    ken_novelty,
    l2_memorization,
    memorization_scores,
    nearest_neighbours,
)
from diversity_callbacks.functional.modes import KernelMoments, Mode, leading_modes
from diversity_callbacks.functional.novelty import Novelty, novelty
from diversity_callbacks.functional.per_condition import per_condition_vendi_score
from diversity_callbacks.functional.quality import quality_weighted_vendi_score
from diversity_callbacks.functional.schur import SchurComplementResult, schur_complement_entropy
from diversity_callbacks.functional.spectrum import (
    normalized_spectrum,
    order_key,
    schur_block_score,
    vendi_from_spectrum,
)
from diversity_callbacks.functional.vendi import vendi_score, vendi_score_from_kernel

__all__ = [
    "Kernel",
    "KernelMoments",
    "Mode",
    "NearestNeighbours",
    "Novelty",
    "RandomFourierFeatures",
    "SchurComplementResult",
    "authenticity",
    "calibrated_l2",
    "conditional_vendi_score",
    "copy_rate",
    "distinct_n",
    "embedding_clip_score",
    "gaussian_kernel",
    "information_vendi_score",
    "ken_novelty",
    "l2_memorization",
    "leading_modes",
    "memorization_scores",
    "nearest_neighbours",
    "normalize_rows",
    "normalized_spectrum",
    "novelty",
    "order_key",
    "per_condition_vendi_score",
    "quality_weighted_vendi_score",
    "random_fourier_features",
    "random_fourier_frequencies",
    "resolve_kernel",
    "schur_block_score",
    "schur_complement_entropy",
    "self_bleu",
    "vendi_from_spectrum",
    "vendi_score",
    "vendi_score_from_kernel",
]
