"""
The whole method as one scikit-learn Pipeline, tuned with GridSearchCV
======================================================================

CGNI (stage 1 -> 2 -> 3) written as a single estimator::

    image column (NIfTI paths) --ImagingCNNClassifier--> h_v  \\
    SNP columns   --SNPQualityFilter (QC + imputation)-> x_g  -> ContrastiveSNPEncoder -> CGNIClassifier

so that ``GridSearchCV`` searches the contrastive loss weights (lambda, sigma, theta) with
``scoring="balanced_accuracy"`` and every fold refits every stage on its training part only.
``Pipeline(memory=...)`` caches the fitted feature step: the CNN is trained once per fold,
not once per candidate. The fitted search is then saved and loaded back with skops
(:mod:`sklearn_cgni.persistence`).

Sizes: ``SKLEARN_CGNI_EXAMPLE_SIZE=tiny`` (what CI runs, ~30 s on one core: far too small
to learn anything) or ``small`` (default; a few minutes). The paper's sizes need a GPU.
"""

# %%
# Settings and a simulated cohort written as NIfTI files, as a user's cohort would be.
import os
import tempfile
import warnings

import numpy as np
import pandas as pd
from joblib import Memory
from sklearn.compose import ColumnTransformer
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from sklearn_cgni.classification import CGNIClassifier
from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier
from sklearn_cgni.persistence import get_untrusted_types, load, save

SIZE = os.environ.get("SKLEARN_CGNI_EXAMPLE_SIZE", "small")
N, N_SNPS, EPOCHS, GRID = {
    "tiny": (80, 30, 2, {"contrastive__lambda_vg": [0.3, 0.7]}),
    "small": (400, 120, 10, {"contrastive__lambda_vg": [0.3, 0.7], "contrastive__theta_gg": [0.0, 0.4]}),
}[SIZE]
ARCH = dict(channels=(4, 8, 8), padding=1, pool_blocks=3, global_pool="avg")  # h_v: 8 values
warnings.filterwarnings("ignore", category=UserWarning)  # batch-size clipping at tiny sizes

work = tempfile.mkdtemp(prefix="cgni_pipeline_")
cohort = make_cohort(N, n_snps=N_SNPS, shape=(24, 28, 24), n_bad_images=0,
                     output_dir=os.path.join(work, "cohort"), random_state=0)
ph = cohort.phenotypes
keep = ph.index[ph["wm_group"].notna()]          # intermediate working memory is excluded
X = cohort.genotypes.loc[keep].copy()            # SNP columns (NaN = missing call)
X.insert(0, "image", pd.Series(cohort.images, index=cohort.participant_ids)[keep])
y = ph.loc[keep, "wm_group"].astype(int).to_numpy()
snp_cols = list(cohort.genotypes.columns)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
print(f"{len(y)} participants ({np.bincount(y)} low/high WM), {len(snp_cols)} SNPs")

# %%
# Stage 1: the brain-age CNN, trained on age (here on the training participants only) and
# saved as a weights file; the WM classifier starts from its first blocks.
train_ids = X_train.index
brain_age = BrainAgeCNNTransformer(**ARCH, max_epochs=EPOCHS, validation_fraction=0.0,
                                   early_stopping=False, lr_schedule="none", device="cpu",
                                   random_state=0)
brain_age.fit(X_train["image"].tolist(), ph.loc[train_ids, "age"].to_numpy())
weights = brain_age.save_weights(os.path.join(work, "brain_age_cnn.pt"))

# %%
# The method as one Pipeline. ``image_features=8``: the first 8 columns coming out of the
# feature step are h_v (the CNN's width), the rest are SNPs.
features = ColumnTransformer([
    ("image", ImagingCNNClassifier(brain_age_model=weights, n_transfer_blocks=2, max_epochs=EPOCHS,
                                   validation_fraction=0.0,
                                   early_stopping=False, lr_schedule="none", class_weight="balanced", device="cpu",
                                   random_state=0), ["image"]),
    ("snp", SNPQualityFilter(), snp_cols),
])
pipe = Pipeline([
    ("features", features),
    ("contrastive", ContrastiveSNPEncoder(image_features=ARCH["channels"][-1], n_components=16,
                                          image_hidden=(32,), genetic_hidden=(64, 32), max_epochs=EPOCHS,
                                          batch_size=50, device="cpu", random_state=0)),
    ("classifier", CGNIClassifier(hidden_layer_sizes=(32, 16), max_epochs=EPOCHS, batch_size=50,
                                  class_weight="balanced", device="cpu", random_state=0)),
], memory=Memory(os.path.join(work, "cache"), verbose=0))

# %%
# Grid search over the loss weights. The feature step (CNN + QC) is fitted once per fold and
# read from the cache for every other candidate.
search = GridSearchCV(pipe, GRID, scoring="balanced_accuracy",
                      cv=StratifiedKFold(2, shuffle=True, random_state=0), refit=True)
search.fit(X_train, y_train)
results = pd.DataFrame(search.cv_results_)
cols = [c for c in results if c.startswith("param_")] + ["mean_test_score", "std_test_score"]
print(results[cols].round(3).to_string(index=False))
held_out = balanced_accuracy_score(y_test, search.predict(X_test))
print(f"best {search.best_params_}: held-out balanced accuracy {held_out:.3f} "
      f"(chance 0.5; at this size expect little above it)")

# %%
# Save the fitted search and load it back: skops refuses types it does not know unless you
# list them after checking (here the CV splitter, the scorer and the joblib cache).
path = save(search.best_estimator_, os.path.join(work, "cgni_pipeline.skops"))
untrusted = get_untrusted_types(path)
print("types to review before loading:", untrusted)
loaded = load(path, trusted=untrusted)
assert np.array_equal(loaded.predict(X_test), search.predict(X_test))
print(f"saved and reloaded {os.path.getsize(path) / 1e3:.0f} kB; predictions identical")
