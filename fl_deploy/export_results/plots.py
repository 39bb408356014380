"""The plots of a job's result (matplotlib, written as PNG): training loss per site, the global model's held-out
perplexity per round, and per round the round times and the MB each site sent and received."""

import os

from fl_deploy.export_results.metrics import GLOBAL, perplexity

TRAIN_LOSS_PNG = os.path.join("plots", "train_loss.png")
PERPLEXITY_PNG = os.path.join("plots", "global_perplexity.png")
SYSTEM_PNG = os.path.join("plots", "round_time_and_bytes.png")


def _series(rows: list, site: str, metric: str):
    pts = [(r["round"], r[metric]) for r in rows if r["site"] == site and r[metric] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def global_perplexity_points(rows: list):
    """([(rounds completed, perplexity of the global model)], (last round, final aggregated perplexity) or None)."""
    rounds = sorted({r["round"] for r in rows})
    points = []
    for rnd in rounds:
        loss = next((r["global_eval_loss"] for r in rows if r["round"] == rnd and r["site"] == GLOBAL), None)
        if loss is None:  # no server aggregate: the sites' losses weighted by their held-out rows, as the server's
            site = [(r["global_eval_loss"], r["held_out_rows"] or 1) for r in rows
                    if r["round"] == rnd and r["site"] != GLOBAL and r["global_eval_loss"] is not None]
            loss = sum(v * n for v, n in site) / sum(n for _, n in site) if site else None
        if loss is not None:
            points.append((rnd - 1, perplexity(loss)))
    final = None
    if rounds:
        last = next((r["eval_loss"] for r in rows if r["round"] == rounds[-1] and r["site"] == GLOBAL), None)
        if last is not None:
            final = (rounds[-1], perplexity(last))
    return points, final


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.set_title(title, fontsize=11)
    ax.margins(x=0.05, y=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def _finish(plt, fig, ax, path: str, has_data: bool, what: str):
    if has_data:
        ax.legend()
    else:
        ax.text(0.5, 0.5, f"no {what} in round_metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_train_loss(rows: list, path: str, title: str):
    plt, fig, ax = _figure(f"Training loss per site\njob {title}", "round", "training loss")
    sites = [s for s in dict.fromkeys(r["site"] for r in rows) if s != GLOBAL]
    has_data = False
    for site in sites:
        x, y = _series(rows, site, "train_loss")
        if x:
            ax.plot(x, y, marker="o", label=site)
            has_data = True
    x, y = _series(rows, GLOBAL, "train_loss")
    if x:
        ax.plot(x, y, color="black", linestyle="--", marker=".", label="all sites (weighted mean)")
        has_data = True
    _finish(plt, fig, ax, path, has_data, "train_loss")


def plot_global_perplexity(rows: list, path: str, title: str):
    plt, fig, ax = _figure(f"Global model held-out perplexity\nexp(the sites' held-out losses weighted by their "
                           f"held-out rows), job {title}",
                           "rounds of federated training completed (0 = initial model)", "perplexity")
    points, final = global_perplexity_points(rows)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="tab:blue",
                label="global model, evaluated at the start of the next round")
        for x, y in points:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if final:
        if points and points[-1][0] < final[0]:
            ax.plot([points[-1][0], final[0]], [points[-1][1], final[1]], linestyle=":", color="tab:blue")
        ax.plot([final[0]], [final[1]], marker="o", markerfacecolor="white", color="tab:blue", linestyle="none",
                label=f"after round {final[0]}: sites' trained models (aggregated eval)")
        ax.annotate(f"{final[1]:.1f}", final, textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    _finish(plt, fig, ax, path, bool(points or final), "global_eval_loss")


def plot_round_time_and_bytes(system: dict, path: str, title: str):
    """Top: the server's round duration and each site's round time; bottom: MB each site received and sent."""
    plt, fig, ax = _figure(f"Round time and bytes per site\njob {title}", "round", "seconds")
    fig.set_size_inches(7, 7)
    ax.set_position([0.12, 0.56, 0.84, 0.34])
    bytes_ax = fig.add_axes([0.12, 0.08, 0.84, 0.34], sharex=ax)
    bytes_ax.set_xlabel("round")
    bytes_ax.set_ylabel("MB (tensor bytes)")
    bytes_ax.grid(True, alpha=0.3)
    has_time = has_bytes = False
    for run, metrics in system.items():
        if "round_duration_s" in metrics:
            x = sorted(metrics["round_duration_s"])
            ax.plot([r + 1 for r in x], [metrics["round_duration_s"][r] for r in x], color="black", linestyle="--",
                    marker=".", label="server: round duration")
            has_time = True
    for run, metrics in system.items():
        if "round_time_s" in metrics:
            x = sorted(metrics["round_time_s"])
            line, = ax.plot([r + 1 for r in x], [metrics["round_time_s"][r] for r in x], marker="o",
                            label=f"{run}: receive -> result")
            has_time = True
            for key, style, what in (("received_bytes", "-", "received"), ("sent_bytes", ":", "sent")):
                series = metrics.get(key) or {}
                if series:
                    xs = sorted(series)
                    bytes_ax.plot([r + 1 for r in xs], [series[r] / 1e6 for r in xs], linestyle=style, marker="o",
                                  color=line.get_color(), markerfacecolor="white" if what == "sent" else None,
                                  label=f"{run} {what}")
                    has_bytes = True
    if has_bytes:
        bytes_ax.legend(fontsize=8)
        bytes_ax.set_ylim(bottom=0)
    else:
        bytes_ax.text(0.5, 0.5, "no system/*_bytes in tb_events", ha="center", va="center",
                      transform=bytes_ax.transAxes)
    if has_time:
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    else:
        ax.text(0.5, 0.5, "no system/round time in tb_events", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path)
    plt.close(fig)
