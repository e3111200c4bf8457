"""scikit-learn's side of tests/division.rs: GaussianMixture from a given initialisation.

Reads a JSON file {"x": [...], "weights": [2], "means": [2], "variances": [2], "max_iter",
"tol", "reg_covar"} and prints JSON: the fitted weights, means, variances, n_iter, the posterior
of the smaller-mean component at every x, and the clean verdict by RDE's split_prob rule.
"""
import json
import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture


def split_prob(prob, threshold):
    # RDE's rule: if every p exceeds the threshold, hold out the 1% with the smallest p.
    if prob.min() > threshold:
        threshold = np.sort(prob)[len(prob) // 100]
    return prob > threshold


def main():
    case = json.load(open(sys.argv[1]))
    x = np.asarray(case["x"], dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(
        n_components=2,
        covariance_type="full",
        max_iter=case["max_iter"],
        tol=case["tol"],
        reg_covar=case["reg_covar"],
        weights_init=np.asarray(case["weights"]),
        means_init=np.asarray(case["means"]).reshape(2, 1),
        precisions_init=(1.0 / np.asarray(case["variances"])).reshape(2, 1, 1),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    prob = gmm.predict_proba(x)[:, gmm.means_.argmin()]
    print(json.dumps({
        "weights": gmm.weights_.tolist(),
        "means": gmm.means_.ravel().tolist(),
        "variances": gmm.covariances_.ravel().tolist(),
        "n_iter": int(gmm.n_iter_),
        "posterior": prob.tolist(),
        "clean": split_prob(prob, 0.5).tolist(),
    }))


if __name__ == "__main__":
    main()
