"""Networks: the torch parts. The visit-sequence network and its heads
(:mod:`~ehrprog.networks.visit_model`), the building blocks of pre-trained backbones
(:mod:`~ehrprog.networks.backbones`: BERT blocks, visit token sequences, checkpoints), the
piecewise-exponential survival pieces (:mod:`~ehrprog.networks.piecewise`), the time-to-event
pre-training objective (:mod:`~ehrprog.networks.tte`), the one training engine
(:mod:`~ehrprog.networks.training`), batched inference (:mod:`~ehrprog.networks.inference`) and
attributions (:mod:`~ehrprog.networks.explain`).

May import :mod:`ehrprog.metrics` and every stage below it, never the plugin manager: a network
is given its backbone (see ``docs/architecture.md``)."""
