"""
Brain-genotype scores from gray-matter images
==============================================

The second paper's pipeline at a tiny size (runs in about a minute on a laptop CPU): a
multi-task 3D CNN predicts many SNPs from each image, its held-out predictions (cross-fitting)
are brain-genotype scores, saliency maps show where each score looks, and the scores are
tested against cognition with age, sex and site as covariates. The IDP baseline (regional
mean gray matter -> ridge per SNP) goes through the same steps.

At this size the CNN has far too few participants to learn much; see
``benchmarks/results/brain_genotype_scores.md`` for a larger run against the planted truth.
"""

# %%
# A simulated cohort with planted causal SNPs (strong effects so that 160 participants
# carry some signal).
import tempfile
import warnings

import numpy as np

from sklearn_cgni.datasets import make_cohort
from sklearn_cgni.explain import SaliencyExplainer, association_table
from sklearn_cgni.genetics import SNPQualityFilter
from sklearn_cgni.imaging import BrainGenotypeScorer, cross_fit_scores, make_idp_scorer

cohort = make_cohort(n_participants=160, n_snps=30, shape=(24, 28, 24), n_causal_snps=5,
                     snp_effect=0.1, ld_block_size=(2, 4), n_bad_images=0, random_state=0)
with warnings.catch_warnings():             # QC: drop rare / badly called SNPs (listed)
    warnings.simplefilter("ignore", UserWarning)
    keep = SNPQualityFilter(min_maf=0.05).fit(cohort.genotypes).get_feature_names_out()
G = cohort.genotypes[keep]                  # raw calls: NaN = missing, masked out of the loss
causal = [s for s in cohort.ground_truth["causal_snps"] if s in keep]

# %%
# Held-out CNN scores: every participant is scored by a model trained on the other folds.
cnn = BrainGenotypeScorer("dosage", channels=(4, 8, 8), padding=1, pool_blocks=3,
                          max_epochs=3, batch_size=16, validation_fraction=0, device="cpu",
                          random_state=0)
cnn_scores, models = cross_fit_scores(cnn, cohort.images, G, cv=3, return_estimators=True)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    idp_scores = cross_fit_scores(make_idp_scorer(cohort.atlas), cohort.images, G, cv=3)


def r(scores, snp):
    ok = G[snp].notna()
    return np.corrcoef(scores.loc[ok, snp], G.loc[ok, snp])[0, 1]


for snp in causal:
    print(f"{snp}: held-out r with genotype  CNN {r(cnn_scores, snp):+.2f}   "
          f"IDP {r(idp_scores, snp):+.2f}")

# %%
# Saliency of the causal SNPs' scores (fold-1 model), NIfTI maps and top AAL2 regions.
sal = SaliencyExplainer(models[0], snps=causal, atlas=cohort.atlas, top_k=3)
sal.fit(cohort.images[:20], affine=cohort.affine)
print(sal.top_regions_.head(6))
paths = sal.write_maps(tempfile.mkdtemp())
print("planted:", [(e["snp"], e["region"]) for e in cohort.ground_truth["snp_region_effects"]][:5])

# %%
# Association with cognition (age, sex, site as covariates), Bonferroni and FDR.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    table = association_table(idp_scores, cohort.phenotypes,
                              ["digit_span", "fluid_intelligence", "reaction_time"],
                              covariates=["age", "sex", "site"])
print(table.sort_values("p").head(5)[["score", "measure", "n", "beta", "se", "p", "p_bonferroni"]])
