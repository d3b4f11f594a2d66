"""DistributedDataParallel training with two CPU processes on the gloo backend (as torchrun runs it):
every target, with the default backbone and with a BERT backbone (whose pre-training heads take
no part in fine-tuning), keeps the ranks identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import torchrun

SCRIPT = Path(__file__).parent / "scripts" / "ddp_fit.py"


@pytest.mark.parametrize("backbone", ["default", "cehrbert"])
@pytest.mark.parametrize("target", ["stage", "progression", "both"])
def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path, sim_omop, target, backbone):
    result = torchrun(SCRIPT, str(tmp_path), str(sim_omop), target, backbone)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["checksum"] == ranks[1]["checksum"] and ranks[0]["norm"] == ranks[1]["norm"]
    assert ranks[0]["outputs"] == ranks[1]["outputs"]
    assert len(ranks[0]["history"]) == 2
