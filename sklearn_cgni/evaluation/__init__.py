"""Confound-aware evaluation: covariate adjustment inside CV, matched cohorts, paired tests.

In the reference study the working-memory groups differ by 13.6 years of mean age and in
sex ratio, so age alone separates them (balanced accuracy about 0.8). This subpackage
answers "how much of a model's accuracy is age?" for any scikit-learn model:

``CovariateRegressor``
    Regresses covariates out of features with coefficients learned on the training fold.
``ImageCovariateRegressor``
    The same for every voxel of NIfTI images, before a CNN that is trained on them.
``adjusted_image_scores``
    Per-fold scores of an image model trained on covariate-adjusted images.
``match_groups``
    Age- and sex-matched subset of the two groups with a balance report.
``corrected_resampled_ttest``, ``paired_permutation_test``
    Paired tests on per-fold scores.
``balanced_accuracy_interval``, ``paired_balanced_accuracy_test``, ``paired_mean_difference``, ``holm_adjust``
    Bootstrap intervals and paired permutation tests on per-participant predictions, and
    Holm's correction for a family of comparisons.
``covariate_baselines``, ``evaluate_confounds``
    Covariate-only models and the table: raw, covariate-only, adjusted, matched, gain.
``summarize_confounds``
    The same table from per-fold scores, to add models scored elsewhere on the same folds.
``incremental_value``
    Likelihood-ratio test of what a model's out-of-fold predictions add to the covariates.
``CrossFitTransformer``
    Out-of-fold transforms of a learned representation for the rows a later stage trains on.
"""

from ._covariates import CovariateRegressor

__all__ = ["CovariateRegressor"]
from ._matching import match_groups, standardized_mean_difference  # noqa: E402

__all__ += ["match_groups", "standardized_mean_difference"]
from ._stats import corrected_resampled_ttest, paired_permutation_test  # noqa: E402

__all__ += ["corrected_resampled_ttest", "paired_permutation_test"]
from ._incremental import incremental_value  # noqa: E402

__all__ += ["incremental_value"]
from ._confounds import adjusted_model, covariate_baselines, evaluate_confounds, summarize_confounds  # noqa: E402

__all__ += ["adjusted_model", "covariate_baselines", "evaluate_confounds", "summarize_confounds"]
from ._image_covariates import ImageCovariateRegressor, adjusted_image_scores  # noqa: E402

__all__ += ["ImageCovariateRegressor", "adjusted_image_scores"]
from ._cross_fit import CrossFitTransformer  # noqa: E402

__all__ += ["CrossFitTransformer"]
from ._bootstrap import (  # noqa: E402
    balanced_accuracy_interval,
    holm_adjust,
    paired_balanced_accuracy_test,
    paired_mean_difference,
)

__all__ += ["balanced_accuracy_interval", "holm_adjust", "paired_balanced_accuracy_test", "paired_mean_difference"]
