"""The global model's held-out loss over sites that evaluate on held-out rows of their own.

Each site evaluates the global model it receives on its held-out rows and reports the loss with the number of rows
(HELD_OUT_ROWS) in its result's metrics (fl_site/client.py). The server's figure for the federation is the mean of
the sites' losses weighted by their held-out rows (HeldOutMean, used by fl_server/fedavg.py), as a sample-size
weighted mean of per-site evaluations is usually defined (e.g. FedAvg's own weighting by data size, McMahan et al.
2017). With a shared held-out split (data_source shared) every site evaluates the same
model on the same rows, so the weighted mean is that one value; with site-local data it is the only figure no site
can compute alone. NVFlare's own metric aggregation weights by training steps (FedAvg's NUM_STEPS_CURRENT_ROUND),
which says nothing about how many rows a loss was measured on.
"""

HELD_OUT_ROWS = "held_out_rows"  # a site's metric: rows its held-out losses were measured on
HELD_OUT_LOSSES = ("global_eval_loss", "eval_loss")  # site metrics measured on its held-out rows
PERPLEXITY = {"eval_loss": "perplexity"}  # a loss whose exp() the sites also report
MAX_LOSS = 50.0  # as fl_site/training.py's evaluate(): exp() of a diverged loss stays finite


def weighted_held_out(reports: list) -> dict:
    """The held-out metrics of one round over its sites: ``reports`` is one metrics dict per site (what each sent);
    returns {loss: sum(rows_i * loss_i) / sum(rows_i) for each of HELD_OUT_LOSSES every report has, the matching
    perplexity = exp(that mean), HELD_OUT_ROWS: sum(rows_i)}; {} when a report lacks HELD_OUT_ROWS or all rows are 0
    (an older client: NVFlare's step-weighted means stand)."""
    import math

    rows = [r.get(HELD_OUT_ROWS) for r in reports]
    if not reports or any(not isinstance(n, (int, float)) or n < 0 for n in rows) or sum(rows) <= 0:
        return {}
    total = sum(rows)
    out = {HELD_OUT_ROWS: total}
    for loss in HELD_OUT_LOSSES:
        values = [r.get(loss) for r in reports]
        if all(isinstance(v, (int, float)) for v in values):
            out[loss] = sum(n * v for n, v in zip(rows, values)) / total
            if loss in PERPLEXITY:
                out[PERPLEXITY[loss]] = math.exp(min(out[loss], MAX_LOSS))
    return out


class HeldOutMean:
    """One round's site reports, collected as results arrive; ``apply`` puts the weighted held-out means into the
    round's aggregated metrics (the rest stays NVFlare's step-weighted means)."""

    def __init__(self):
        self.reports = {}

    def reset(self):
        self.reports = {}

    def add(self, site: str, metrics):
        if metrics:
            self.reports[site] = dict(metrics)

    def apply(self, aggregated):
        if aggregated is None:
            return None
        return {**aggregated, **weighted_held_out(list(self.reports.values()))}
