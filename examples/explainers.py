"""
Post-analysis: sparse CCA, occlusion and genes
==============================================

After stages 1-2 the seed paper asks *which brain regions and which SNPs* the learned
embeddings tie together (its Tables 3-5 and Fig. 3):

1. :class:`~sklearn_cgni.explain.SparseCCA` (cca-zoo's iterative penalised least squares)
   on the imaging and genetic embeddings ``(z_v, z_g)``, with canonical correlations per
   split;
2. :class:`~sklearn_cgni.explain.OcclusionExplainer`: for each component, occlude every
   atlas region (through the CNN and ``e_v``) and every SNP (through ``e_g``), eq. (6), and
   keep the outliers (2.5 / 3 standard deviations);
3. :func:`~sklearn_cgni.explain.regions_per_component` and
   :func:`~sklearn_cgni.explain.genes_per_component` (SNP -> gene table), then an
   enrichment test on the cohort's gene sets.

The simulated cohort has planted causal SNPs and affected regions, so what is found can be
checked. ``SKLEARN_CGNI_EXAMPLE_SIZE=tiny`` (CI) is too small to recover them; ``small``
(default, a few minutes) shows the mechanics at a more useful size;
``benchmarks/bench_ground_truth_recovery.py`` measures recovery properly.
"""

# %%
import os
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.explain import (
    OcclusionExplainer,
    SparseCCA,
    enrichment_test,
    genes_per_component,
    regions_per_component,
)
from sklearn_cgni.genetics import ContrastiveSNPEncoder, SNPQualityFilter
from sklearn_cgni.imaging import BrainAgeCNNTransformer

SIZE = os.environ.get("SKLEARN_CGNI_EXAMPLE_SIZE", "small")
N, N_SNPS, EPOCHS, N_OCC = {"tiny": (80, 30, 2, 16), "small": (400, 120, 15, 64)}[SIZE]
warnings.filterwarnings("ignore", category=UserWarning)

cohort = make_cohort(N, n_snps=N_SNPS, shape=(24, 28, 24), n_bad_images=0, random_state=0)
ph = cohort.phenotypes
has_group = ph["wm_group"].notna().to_numpy()
idx = np.flatnonzero(has_group)
y = ph["wm_group"].to_numpy()[idx].astype(int)
train, test = train_test_split(idx, test_size=0.3, stratify=y, random_state=0)

# %%
# Stages 1 and 2 (see examples/pipeline_gridsearch.py for them inside one Pipeline).
qc = SNPQualityFilter().fit(cohort.genotypes.iloc[train])            # QC + imputation
Xg = pd.DataFrame(qc.transform(cohort.genotypes), index=cohort.genotypes.index,
                  columns=qc.get_feature_names_out())
cnn = BrainAgeCNNTransformer(channels=(4, 8, 8), padding=1, pool_blocks=3, global_pool="avg",
                             max_epochs=EPOCHS, validation_fraction=0.0,
                             early_stopping=False, lr_schedule="none", device="cpu", random_state=0)
cnn.fit(cohort.images[train], ph["age"].to_numpy()[train])
h_v = cnn.transform(cohort.images)
XV = np.hstack([h_v, Xg.to_numpy()])
enc = ContrastiveSNPEncoder(image_features=h_v.shape[1], n_components=8, image_hidden=(32,),
                            genetic_hidden=(64, 32), max_epochs=EPOCHS, batch_size=40, device="cpu",
                            random_state=0)
enc.fit(XV[train], ph["wm_group"].to_numpy()[train].astype(int))
z_v, z_g = enc.transform_image(XV), enc.transform_genetic(XV)

# %%
# Sparse CCA on the training embeddings; correlations on the participants it never saw.
scca = SparseCCA(n_components=(1, 2), alpha_x=(0.05,), alpha_y=(0.05,), cv=2, random_state=0)
scca.fit(z_v[train], z_g[train])
print(scca.correlation_table(train=(z_v[train], z_g[train]), test=(z_v[test], z_g[test])).round(3))

# %%
# Occlusion: every atlas region of N_OCC training images, every SNP of every training
# participant, for each component's top latent node.
occ = OcclusionExplainer(scca, feature_extractor=cnn, image_encoder=enc, genetic_encoder=enc,
                         atlas=cohort.atlas, batch_size=8)
occ.fit(cohort.images[train[:N_OCC]], Xg.iloc[train])
print(f"{len(occ.region_contributions_)} regions ({occ.atlas_.name}), "
      f"{len(occ.snp_contributions_)} SNPs occluded; {occ.n_image_forwards_} image forwards")

# %%
# Regions and genes per component, next to what was planted.
truth = cohort.ground_truth
if len(occ.significant_regions_):
    print(regions_per_component(occ.significant_regions_).to_string())
found_regions = sorted(set(occ.significant_regions_["region"]))
print("significant regions:", found_regions,
      "| planted:", sorted(truth["affected_regions"]))

gene_table = cohort.snp_info.reset_index()[["snp", "gene"]]
found_snps = sorted(set(occ.significant_snps_["snp"]))
print("significant SNPs:", found_snps, "| planted causal:", sorted(truth["causal_snps"]))
if found_snps:
    print(genes_per_component(occ.significant_snps_, gene_table).to_string())
    genes = sorted(set(cohort.snp_info.loc[found_snps, "gene"]))
    background = sorted(set(cohort.snp_info.loc[Xg.columns, "gene"]))
    sets = {name: [g for g in members if g in set(background)] for name, members in cohort.gene_sets.items()}
    print(enrichment_test(genes, {k: v for k, v in sets.items() if v}, background=background).head())
