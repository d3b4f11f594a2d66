"""Run under torchrun: every rank fits the same estimator; each writes what it ended with."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

import ehrprog as ep

out = sys.argv[1]
data = sys.argv[2]
cohort = ep.tasks.CKDProgression().build(ep.read_omop(data))
est = ep.VisitProgressionEstimator(
    target="both", embedding_dim=16, hidden_dim=16, max_epochs=2, batch_size=16, lr=1e-2, random_state=0
)
est.fit(cohort.X, cohort.y)
flat = torch.cat([p.detach().flatten() for p in est.model_.parameters()]).double()
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
    json.dump(
        {
            "world": int(os.environ["WORLD_SIZE"]),
            "checksum": float(flat.sum()),
            "norm": float(flat.norm()),
            "risk": np.round(est.predict_risk(cohort.X[:20]).astype(float), 6).tolist(),
            "history": est.history_,
        },
        handle,
    )
torch.distributed.destroy_process_group()
