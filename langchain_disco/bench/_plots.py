"""PNG plots of `disco bench sim` results (matplotlib, Agg backend: no display needed).

matplotlib is an optional dependency (the `bench` extra); `plots_available()` says whether it is
installed, and the command notes what it skipped rather than failing.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_disco.bench.sim import ALL_POLICIES, BASELINES, ORACLE, SimBenchResult
from langchain_disco.scheduling.migration import Role
from langchain_disco.sim.timeline import MigratedStream, TokenTimeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'langchain-disco[bench]'"

# One colour per policy in every plot, so that figures can be compared side by side.
_COLOURS = dict(
    zip(
        ALL_POLICIES,
        (
            "tab:green",
            "tab:blue",
            "tab:purple",
            "tab:gray",
            "tab:brown",
            "tab:orange",
            "tab:cyan",
            "tab:red",
            "black",
        ),
        strict=True,
    )
)


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float = 8.0, height: float = 4.5, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _style(policy: str) -> dict[str, object]:
    if policy == ORACLE:
        return {"color": "black", "linestyle": "--", "linewidth": 1.8}
    if policy in BASELINES:
        return {"color": _COLOURS[policy], "linestyle": ":", "linewidth": 1.5}
    return {"color": _COLOURS[policy], "linestyle": "-", "linewidth": 1.5}


def _log_y(ax: Axes) -> None:
    """A log axis labelled with plain numbers (0.5, 1, 2) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    # Minor ticks: label only 2x and 5x a power of ten, or the axis turns into a wall of digits.
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda y, _: f"{y:g}" if f"{y:e}"[0] in "25" else "")
    )


def _title(result: SimBenchResult) -> str:
    o = result.options
    return (
        f"{o.regime}: {o.device_name} + {o.server_name}, budget on {o.regime_spec.resource}\n"
        f"{result.n_requests:,} requests of {result.trace_name} x {len(o.seeds)} seed(s)"
    )


def plot_ttft_cdf(result: SimBenchResult, path: Path) -> Path:
    """The TTFT distribution of every policy at one budget: the CDF, and its tail (the share of
    requests slower than t, log scale), both on a log time axis since tails are long."""
    from matplotlib.ticker import FuncFormatter

    b = result.options.cdf_at
    fig, (body, tail) = _figure(width=12.0, height=4.5, ncols=2)
    for policy in ALL_POLICIES:
        values = sorted(result.cdf_ttft_s.get(policy, ()))
        if not values:
            continue
        n = len(values)
        label = "oracle (mean-optimal)" if policy == ORACLE else policy
        style = _style(policy)
        body.step(values, [(i + 1) / n for i in range(n)], where="post", label=label, **style)  # type: ignore[arg-type]
        # 1 - CDF down to the slowest request but one (the slowest would be 0: off a log axis).
        tail.step(values[:-1], [1 - (i + 1) / n for i in range(n - 1)], where="post", **style)  # type: ignore[arg-type]
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    for ax in (body, tail):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("TTFT (s, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    body.set_ylabel("fraction of requests with TTFT <= t")
    body.set_ylim(0, 1.005)
    tail.set_yscale("log")
    tail.yaxis.set_major_formatter(plain)
    tail.axhline(0.01, color="0.4", linewidth=0.8)
    tail.annotate("p99", (tail.get_xlim()[0], 0.01), va="bottom", fontsize=8, color="0.4")
    tail.set_ylabel("fraction of requests with TTFT > t (log scale)")
    body.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"TTFT distribution at budget b={b:g} - {_title(result)}", fontsize=9)
    return _save(fig, path)


def plot_ttft_vs_budget(result: SimBenchResult, path: Path) -> Path:
    """Mean and p99 TTFT against the budget, per policy, with the oracle's curve."""
    o = result.options
    fig, axes = _figure(width=12.5, height=4.5, ncols=2)
    for ax, attr, label in (
        (axes[0], "mean_ttft_s", "mean TTFT (s)"),
        (axes[1], "p99_ttft_s", "p99 TTFT (s)"),
    ):
        for policy in o.policies:
            points = [
                (r.budget, getattr(r, attr))
                for r in result.rows
                if r.policy == policy and not math.isnan(getattr(r, attr))
            ]
            if not points:
                continue
            style = _style(policy)
            if policy in BASELINES:  # independent of the budget: a level to compare against
                ax.axhline(points[0][1], label=policy, **style)  # type: ignore[arg-type]
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=4, label=policy, **style)  # type: ignore[arg-type]
        ax.set_xlim(0, 1)
        _log_y(ax)
        ax.set_xlabel(f"budget b (share of the {o.regime_spec.resource} spend of always-race)")
        ax.set_ylabel(f"{label}, log scale")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_title(result), fontsize=9)
    return _save(fig, path)


def plot_migration_cost(result: SimBenchResult, path: Path) -> Path:
    """Unified cost per request with and without migration, per policy, at one budget."""
    o = result.options
    b = o.cdf_at
    rows = [r for r in result.rows_at(b) if r.policy != ORACLE]
    fig, (ax,) = _figure()
    xs = range(len(rows))
    width = 0.38
    without = [r.mean_cost_without_migration_usd * 1e6 for r in rows]
    with_ = [r.mean_cost_usd * 1e6 for r in rows]
    ax.bar([x - width / 2 for x in xs], without, width, label="without migration", color="0.7")
    ax.bar([x + width / 2 for x in xs], with_, width, label="with migration", color="tab:green")
    for x, (w0, w1) in enumerate(zip(without, with_, strict=True)):
        if w0 > 0:
            change = w1 / w0 - 1
            ax.annotate(
                f"{change:+.0%}" if abs(change) >= 0.005 else f"{change:+.1%}",
                (x + width / 2, w1),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(list(xs), [r.policy for r in rows], rotation=20, fontsize=8)
    ax.set_ylabel("unified cost per request (µUSD)")
    delivery = "eager" if o.pace_tok_s is None else f"paced {o.pace_tok_s:g} tok/s"
    ax.set_title(
        f"cost with and without migration at b={b:g} ({delivery})\n{_title(result)}", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


_ENDPOINT_COLOURS: dict[Role, str] = {"local": "tab:orange", "remote": "tab:blue"}


def plot_token_timeline(
    stream: MigratedStream,
    path: Path,
    *,
    title: str = "",
    names: dict[Role, str] | None = None,
) -> Path:
    """One migrated answer token by token: when each token was generated (dots) and delivered
    (line), coloured by the endpoint that generated it, the hand-over, and the buffer level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line = stream.timeline()
    names = names or {"local": "device", "remote": "server"}
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10.0, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    _plot_tokens(top, stream, line, names)
    for ax in (top, bottom):
        _mark_handover(ax, line)
    _annotate_handover(top, stream, line, names)
    top.set_ylabel("token")
    top.set_ylim(0, line.tokens + 1)
    top.legend(fontsize=8, loc="lower right")
    _plot_buffer(bottom, line)
    head = _timeline_head(stream, line, names)
    fig.suptitle(f"{head}\n{title}" if title else head, fontsize=9)
    return _save(fig, path)


def _plot_tokens(
    ax: Axes, stream: MigratedStream, line: TokenTimeline, names: dict[Role, str]
) -> None:
    """Each endpoint's tokens: when generated (dots) and when delivered (a step line)."""
    index = range(1, line.tokens + 1)
    for role in (stream.source, stream.target):
        mine = [i for i, who in zip(index, line.endpoint, strict=True) if who == role]
        if not mine:
            continue
        colour = _ENDPOINT_COLOURS[role]
        ax.plot(
            [line.generated_s[i - 1] for i in mine],
            mine,
            ".",
            color=colour,
            markersize=3,
            alpha=0.6,
            label=f"generated by the {names[role]}",
        )
        ax.step(
            [line.delivered_s[i - 1] for i in mine],
            mine,
            where="post",
            color=colour,
            linewidth=1.6,
            label=f"delivered to the reader (from the {names[role]})",
        )


def _mark_handover(ax: Axes, line: TokenTimeline) -> None:
    """On one axis: the decision (red line), the wait for the target (shaded), the source's
    stop when later (dotted), and the grid."""
    if line.decided_s is not None and line.target_first_token_s is not None:
        ax.axvspan(line.decided_s, line.target_first_token_s, color="0.85", zorder=0)
    if line.decided_s is not None:
        ax.axvline(line.decided_s, color="tab:red", linewidth=1.2)
    if line.source_stop_s is not None and line.source_stop_s != line.decided_s:
        ax.axvline(line.source_stop_s, color="tab:red", linewidth=1.0, linestyle=":")
    ax.grid(True, alpha=0.3)


def _annotate_handover(
    ax: Axes, stream: MigratedStream, line: TokenTimeline, names: dict[Role, str]
) -> None:
    """Explain the marks of a migration that happened, and rule the hand-over token."""
    k = line.handover_token
    if line.decided_s is None or k is None:
        return
    probe = line.source_stop_s is not None and line.source_stop_s > line.decided_s
    wait_s = (line.target_first_token_s or line.decided_s) - line.decided_s
    # Top left: the tokens rise from bottom left to top right, so that corner is empty.
    ax.text(
        0.01,
        0.98,
        f"red line: the {names[stream.target]} starts"
        + (" a probe (dotted: the source stops)" if probe else "")
        + f"; the {names[stream.source]} hands over after token {k}\n"
        f"shaded: {wait_s:.2f} s until the first token of the {names[stream.target]}",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        color="tab:red",
    )
    ax.axhline(k + 0.5, color="tab:red", linewidth=0.6, linestyle="--")


def _plot_buffer(ax: Axes, line: TokenTimeline) -> None:
    """The tokens generated but not yet delivered, over time (flat zero when eager)."""
    steps = line.buffer_steps()
    ax.step([t for t, _ in steps], [n for _, n in steps], where="post", color="0.2")
    ax.fill_between(
        [t for t, _ in steps], [n for _, n in steps], step="post", color="0.2", alpha=0.15
    )
    most = max((n for _, n in steps), default=0)
    ax.set_ylim(0, max(most, 1) * 1.1)
    if most == 0:
        ax.text(0.01, 0.9, "eager delivery: nothing waits", transform=ax.transAxes, va="top")
    ax.set_ylabel("buffered tokens")
    ax.set_xlabel("time since the request arrived (s)")


def _timeline_head(stream: MigratedStream, line: TokenTimeline, names: dict[Role, str]) -> str:
    """The first line of the timeline's title: the request, the hand-over and the delivery."""
    delivery = "eager" if line.pace_tok_s is None else f"paced {line.pace_tok_s:g} tok/s"
    play = stream.playout
    return (
        f"request #{stream.index}: {stream.prompt_tokens:,} prompt tokens, {line.tokens} output "
        f"tokens, {names[stream.source]} -> {names[stream.target]}, {delivery}, "
        f"stall added {play.stall_added_s:.2f} s"
    )


def write_plots(result: SimBenchResult, out: Path, prefix: str = "") -> list[Path]:
    """Every plot as PNG into `out` (file names start with `prefix`); the migration cost plot
    and one migrated answer's token timeline only for a run that replayed migration (the
    timeline also needs a request that migrated: `run_sim` notes when none did)."""
    out.mkdir(parents=True, exist_ok=True)
    b = result.options.cdf_at
    written = [
        plot_ttft_cdf(result, out / f"{prefix}ttft-cdf-b{b:g}.png"),
        plot_ttft_vs_budget(result, out / f"{prefix}ttft-vs-budget.png"),
    ]
    if result.options.migration:
        written.append(plot_migration_cost(result, out / f"{prefix}migration-cost-b{b:g}.png"))
        example = result.migrated_example
        if example is not None:
            o = result.options
            written.append(
                plot_token_timeline(
                    example.stream,
                    out / f"{prefix}migration-timeline-b{b:g}.png",
                    title=f"{example.policy} at b={example.budget:g}, seed {example.seed} - "
                    f"{_title(result)}",
                    names={
                        "local": f"device ({o.device_name})",
                        "remote": f"server ({o.server_name})",
                    },
                )
            )
    return written
