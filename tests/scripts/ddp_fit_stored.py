"""Run under torchrun: fit on a saved cohort (DDP, each rank its own shards); rank 0 saves the model.

Arguments: COHORT_DIR MODEL_DIR. The parameters are ``tests.test_scaling.PARAMS``' (given as JSON
in the third argument).
"""

from __future__ import annotations

import json
import os
import sys

import torch

import ehrprog as ep

cohort_dir, model_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cohort = ep.load_cohort(cohort_dir)
est = ep.VisitProgressionEstimator(**params).fit(cohort.X, cohort.y)
if int(os.environ["RANK"]) == 0:
    est.save(model_dir)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
