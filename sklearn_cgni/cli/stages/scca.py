"""``scca`` stage: sparse CCA of (z_v, z_g) of fold 0's CGNI model (Table 3)."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ._base import register
from ._common import _figure, _savefig

log = logging.getLogger("sklearn_cgni.cli")


@register("scca", config=("scca",), after=("data", "models_f0"))
def _stage_scca(run, folder):
    from ...explain import SparseCCA, plot_canonical_correlations

    c = run.cfg["scca"]
    d = run.path("models_f0")
    z_v, z_g = np.load(d / "z_v.npy"), np.load(d / "z_g.npy")
    _, hold, cv = run.splits()
    tr, va = cv[0]
    scca = SparseCCA(n_components=list(c["n_components"]), alpha_x=list(c["alpha_x"]), alpha_y=list(c["alpha_y"]),
                     cv=c["cv"], n_permutations=c["n_permutations"], random_state=run.seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scca.fit(z_v[tr], z_g[tr])
    table3 = scca.correlation_table(train=(z_v[tr], z_g[tr]), validation=(z_v[va], z_g[va]),
                                    holdout=(z_v[hold], z_g[hold]))
    table3.to_csv(folder / "table3.csv")
    np.savez(folder / "weights.npz", x=scca.x_weights_, y=scca.y_weights_)
    figures = []
    try:
        _savefig(plot_canonical_correlations(table3), folder / "canonical_correlations.png")
        figures.append(_figure(folder, "canonical_correlations.png", "Canonical correlations (Table 3)",
                               "Sparse CCA of z_v and z_g of fold 0's CGNI model, per component and split."))
    except Exception as exc:  # plotting is optional (matplotlib)
        log.warning("canonical-correlation figure skipped: %s", exc)
    log.info("sparse CCA: %s; holdout correlations %s", scca.best_params_,
             np.round(table3["holdout"].to_numpy(), 3).tolist())
    return {"best_params": scca.best_params_, "n_components": int(scca.n_components_), "figures": figures}
