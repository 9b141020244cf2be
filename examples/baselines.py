"""
The paper's baselines side by side
==================================

Table 1 of the seed paper compares CGNI with four baselines. Here all five are scored on the
same cross-validation folds with ``scoring="balanced_accuracy"``:

* **Imaging CNN**: :class:`~sklearn_cgni.imaging.ImagingCNNClassifier`, the 3D CNN on the
  images alone, starting from the brain-age CNN's first blocks;
* **Sparse genetic NN**: :class:`~sklearn_cgni.classification.SparseGeneticNN` on the SNPs;
* **Imaging-genetic SVM** (linear) and **imaging-genetic NN**:
  :class:`~sklearn_cgni.classification.ImagingGeneticSVM` /
  :class:`~sklearn_cgni.classification.ImagingGeneticNN` on ``h_v`` and the sparse genetic
  NN's embedding ``h_g``;
* **CGNI**: :class:`~sklearn_cgni.genetics.ContrastiveSNPEncoder` then
  :class:`~sklearn_cgni.classification.CGNIClassifier`.

Every model is a Pipeline over the same cached feature step (CNN features + SNP QC), so the
CNN is trained once per fold. ``SKLEARN_CGNI_EXAMPLE_SIZE=tiny`` (CI) is far too small to
rank the models; ``small`` (default) takes a few minutes; ``benchmarks/bench_table1.py``
runs the paper's protocol.
"""

# %%
import os
import tempfile
import warnings

import numpy as np
import pandas as pd
from joblib import Memory
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_cgni.classification import CGNIClassifier, ImagingGeneticNN, ImagingGeneticSVM, SparseGeneticNN
from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter
from sklearn_cgni.imaging import BrainAgeCNNTransformer, ImagingCNNClassifier

SIZE = os.environ.get("SKLEARN_CGNI_EXAMPLE_SIZE", "small")
N, N_SNPS, EPOCHS, FOLDS = {"tiny": (80, 30, 2, 2), "small": (400, 120, 15, 3)}[SIZE]
ARCH = dict(channels=(4, 8, 8), padding=1, pool_blocks=3, global_pool="avg")
warnings.filterwarnings("ignore", category=UserWarning)

work = tempfile.mkdtemp(prefix="cgni_baselines_")
cohort = make_cohort(N, n_snps=N_SNPS, shape=(24, 28, 24), n_bad_images=0,
                     output_dir=os.path.join(work, "cohort"), random_state=0)
ph = cohort.phenotypes
keep = ph.index[ph["wm_group"].notna()]
X = cohort.genotypes.loc[keep].copy()
X.insert(0, "image", pd.Series(cohort.images, index=cohort.participant_ids)[keep])
y = ph.loc[keep, "wm_group"].astype(int).to_numpy()
snp_cols = list(cohort.genotypes.columns)

# %%
# Stage 1 on brain age. For brevity it uses every participant's age here; the
# paper pre-trained on a separate set of participants (``bench_table1.py`` does too).
brain_age = BrainAgeCNNTransformer(**ARCH, max_epochs=EPOCHS, validation_fraction=0.0,
                                   early_stopping=False, lr_schedule="none", device="cpu",
                                   random_state=0).fit(X["image"].tolist(), ph.loc[keep, "age"].to_numpy())
weights = brain_age.save_weights(os.path.join(work, "brain_age_cnn.pt"))

# %%
# One cached feature step shared by every model.
mlp = dict(max_epochs=EPOCHS, batch_size=50, class_weight="balanced", device="cpu", random_state=0)
cnn = ImagingCNNClassifier(brain_age_model=weights, validation_fraction=0.0,
                           early_stopping=False, lr_schedule="none", **mlp)
features = ColumnTransformer([("image", cnn, ["image"]), ("snp", SNPQualityFilter(), snp_cols)])
memory = Memory(os.path.join(work, "cache"), verbose=0)
k = ARCH["channels"][-1]   # the first k feature columns are h_v


def on_features(name, model):
    return Pipeline([("features", features), (name, model)], memory=memory)


def sparse_nn():
    return SparseGeneticNN(hidden_layer_sizes=(64, 32), **mlp)


def image_column(X):
    return X[["image"]]


models = {
    "Imaging CNN": Pipeline([("select", FunctionTransformer(image_column)),
                             ("cnn", clone(cnn))]),
    "Sparse genetic NN": Pipeline([("qc", ColumnTransformer([("snp", SNPQualityFilter(), snp_cols)])),
                                   ("model", sparse_nn())]),
    "Imaging-genetic SVM (linear)": on_features("model", ImagingGeneticSVM(
        image_features=k, genetic_encoder=sparse_nn(), class_weight="balanced", random_state=0)),
    "Imaging-genetic NN": on_features("model", ImagingGeneticNN(
        image_features=k, genetic_encoder=sparse_nn(), hidden_layer_sizes=(32, 16), **mlp)),
    "CGNI (contrastive)": Pipeline([
        ("features", features),
        ("contrastive", ContrastiveSNPEncoder(image_features=k, n_components=16, image_hidden=(32,),
                                              genetic_hidden=(64, 32), max_epochs=EPOCHS, batch_size=50,
                                              device="cpu", random_state=0)),
        ("classifier", CGNIClassifier(hidden_layer_sizes=(32, 16), **mlp)),
    ], memory=memory),
}

# %%
# Same folds for every model.
cv = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
rows = []
for name, model in models.items():
    res = cross_validate(model, X, y, cv=cv, scoring="balanced_accuracy")
    rows.append({"model": name, "balanced accuracy": res["test_score"].mean(),
                 "std": res["test_score"].std(), "fit time (s)": res["fit_time"].mean()})
table = pd.DataFrame(rows).set_index("model")
print(f"{len(y)} participants, {FOLDS}-fold CV (chance = 0.5)")
print(table.round(3).to_string())
assert np.all((table["balanced accuracy"] >= 0) & (table["balanced accuracy"] <= 1))
