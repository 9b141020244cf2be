"""The tiny run configuration shared by the command-line tests (test_cli, test_real_cohorts).

It equals the ``tiny`` preset apart from the embedded cohort's size
(``test_cli.test_tiny_preset_matches_the_test_config``): 2 folds, a 3-block CNN, 2-epoch budgets.
"""

TINY_CONFIG = """
[run]
threads = 1
[protocol]
folds = 2
table2 = false
[stage1]
channels = [4, 8, 8]
padding = 1
pool_blocks = "auto"
global_pool = "none"
pretrain_max_epochs = 2
finetune_max_epochs = 2
budget_growth = 1.0
[contrastive]
n_components = 8
image_hidden = [16]
genetic_hidden = [16]
max_epochs = 2
[classifier]
cross_fit = 2
hidden_layer_sizes = [16]
max_epochs = 2
[baselines]
sparse_hidden = [16]
ig_hidden = [16]
max_epochs = 2
classical_cv = 2
classical_Cs = 4
[scca]
n_components = [1, 2]
alpha_x = [0.05]
alpha_y = [0.05]
cv = 2
[occlusion]
n_participants = 8
batch_size = 8
[scores]
max_snps = 2
cv = 2
max_epochs = 1
saliency_participants = 4
[confounds]
models = ["Imaging CNN", "Brain-age CNN features", "Sparse Genetic NN", "classical: regional GM -> logistic"]
n_permutations = 50
"""
