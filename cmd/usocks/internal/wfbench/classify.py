#!/usr/bin/env python3
"""Closed-world website-fingerprinting attacks on the wfbench features.

Reads the CSV that `usocks wfbench` writes (label, policy, link, load,
features...) and, for each (policy, link), prints the stratified 10-fold
cross-validated accuracy of a random forest (200 trees) and of k-NN
(k=3, Euclidean on standardised features) as one JSON object:
{"POLICY|LINK": {"rf": acc, "knn": acc, "n": samples, "classes": pages}}.
"""
import csv
import json
import sys

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main(path, folds=10, seed=1):
    groups = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        first = header.index("load") + 1
        for row in rows:
            key = row[1] + "|" + row[2]
            xs, ys = groups.setdefault(key, ([], []))
            xs.append([float(v) for v in row[first:]])
            ys.append(int(row[0]))
    out = {}
    for key, (xs, ys) in groups.items():
        x, y = np.array(xs), np.array(ys)
        k = min(folds, min(np.bincount(y)[np.unique(y)]))
        if k < 2:
            continue
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        rf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=2)
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3))
        out[key] = {
            "rf": float(cross_val_score(rf, x, y, cv=cv).mean()),
            "knn": float(cross_val_score(knn, x, y, cv=cv).mean()),
            "n": int(len(y)),
            "classes": int(len(np.unique(y))),
            "folds": int(k),
        }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
