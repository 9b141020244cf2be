"""
How much of a working-memory classifier is age?
================================================

In the reference study the low and high working-memory groups differ by 13.6 years of
mean age (55.95 vs 42.35) and in sex ratio. ``make_cohort`` reproduces this by default
(``demographics="reference"``), so age alone separates the groups. This example scores a
regional gray-matter model raw, with age and sex regressed out inside each training fold,
and on an age- and sex-matched subset, next to covariate-only baselines.

Tiny sizes so that it runs in seconds on a CPU.
"""

# %%
# A small simulated cohort with the reference study's demographics
# ------------------------------------------------------------------
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.evaluation import CovariateRegressor, evaluate_confounds, match_groups

cohort = make_cohort(400, n_snps=40, shape=(16, 19, 16), random_state=0)
ph = cohort.phenotypes
in_group = ph["wm_group"].notna().to_numpy()
print(ph[in_group].groupby("wm_group")[["age", "sex"]].mean())

# %%
# Regional gray matter: mean of each AAL2 region
# ----------------------------------------------
labels = np.asarray(cohort.atlas.img.dataobj).astype(int).ravel()
flat = cohort.images[in_group].reshape(int(in_group.sum()), -1)
regions = {name: flat[:, labels == idx].mean(axis=1)
           for idx, name in zip(cohort.atlas.labels["index"], cohort.atlas.labels["name"])
           if (labels == idx).any()}
X = pd.DataFrame(regions, index=ph.index[in_group])
y = ph.loc[in_group, "wm_group"].astype(int).to_numpy()
covariates = ph.loc[in_group, ["age", "sex"]]

# %%
# The matched subset: age within sex, caliper 0.2 SD
# --------------------------------------------------
matched = match_groups(covariates, y, random_state=0)
print(matched.counts)
print(matched.balance[["smd_before", "smd_after"]].round(3))

# %%
# One table: raw, covariate-only, adjusted, matched and the gain over age + sex
# -----------------------------------------------------------------------------
# ``adjust="first"`` puts a :class:`~sklearn_cgni.evaluation.CovariateRegressor` as the
# first step of the model; it learns the age and sex coefficients on each training fold.
model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=1000))
result = evaluate_confounds({"regional GM": model}, X, y, covariates, cv=5, adjust="first",
                            match=matched, random_state=0)
columns = ["model", "raw_mean", "adjusted_mean", "matched_mean", "gain_mean", "gain_p", "matched_gain_mean",
           "matched_gain_p", "incremental_z", "incremental_p"]
print(result.summary[columns].round(3).to_string(index=False))

# %%
# What the predictions add to age and sex
# ---------------------------------------
# ``incremental_z`` / ``incremental_p``: a likelihood-ratio test of the model's held-out
# predictions in a logistic regression of the label on age and sex
# (:func:`~sklearn_cgni.evaluation.incremental_value`). Unlike the adjusted score it stays
# valid for non-linear models; ``result.predictions`` holds the predictions it used.
print(result.predictions.head())

# %%
# The adjustment is an ordinary transformer
# -----------------------------------------
# Covariates travel as columns of ``X``; the transformer drops them from its output.
adjusted = make_pipeline(CovariateRegressor(["age", "sex"]), StandardScaler(),
                         LogisticRegression(C=0.1, class_weight="balanced", max_iter=1000))
adjusted.fit(X.join(covariates), y)
print(adjusted[0].design_names_, adjusted[0].coef_.shape)
