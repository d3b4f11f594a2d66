"""Run under torchrun: every rank fits the same estimator; each writes what it ended with.

Arguments: OUT_DIR DATA_DIR TARGET BACKBONE.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

import ehrprog as ep

out, data, target, backbone = sys.argv[1:5]
cohort = ep.tasks.CKDProgression().build(ep.read_omop(data))
params = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 2, "batch_size": 16, "lr": 1e-2, "random_state": 0}
if backbone != "default":
    params.update(backbone__num_hidden_layers=1, backbone__num_attention_heads=2)
est = ep.VisitProgressionEstimator(target=target, backbone=backbone, **params)
est.fit(cohort.X, cohort.y)
flat = torch.cat([p.detach().flatten() for p in est.model_.parameters()]).double()
rank = int(os.environ["RANK"])
outputs = est.predict_risk(cohort.X[:20]) if target != "stage" else est.predict_proba(cohort.X[:20])
with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
    json.dump(
        {
            "world": int(os.environ["WORLD_SIZE"]),
            "checksum": float(flat.sum()),
            "norm": float(flat.norm()),
            "outputs": np.round(outputs.astype(float), 6).tolist(),
            "history": est.history_,
        },
        handle,
    )
torch.distributed.destroy_process_group()
