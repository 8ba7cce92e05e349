"""The benchmark report's writing: latest.md (the table) and latest.png (the chart) from a report."""

from report_figures import attainment  # bench/ is on the path: report.py puts it there

# --- writing -----------------------------------------------------------------------------------


def _format(value):
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def _peer_cells(results):
    """{fake latency: {peer: figure}} from the peers benchmark."""
    cells = {}
    for result in results:
        if result["name"] == "peers":
            for fig in result["figures"]:
                cells.setdefault(fig["fake_latency_ms"], {})[fig["peer"]] = fig
    return cells


def _peer_text(fig, peers):
    at = peers.get(fig.get("fake_latency_ms"), {})
    parts = [f"{name.replace('_', ' ')} {_format(peer['value'])} msg/s" for name, peer in at.items()]
    return "; ".join(parts) if parts else ""


def write_markdown(report, path):
    machine, results = report["machine"], report["results"]
    peers = _peer_cells(results)
    load = report["load_average_1min"]
    out = ["# Benchmark report", ""]
    out.append(f"Generated {machine['date']} by `{report['command']}` at commit {machine['commit'] or 'unknown'}, "
               f"in {report['seconds']:.0f} s.")
    out.append(f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
               f"PostgreSQL {machine['postgres'] or 'unknown'}, Redis {machine['redis'] or 'unknown'}, "
               f"wrk {'installed' if machine['wrk'] else 'not installed (ingest uses the Python client)'}.")
    out.append("")
    busy = max(load["start"], load["end"]) > (machine["cpu_count"] or 1) * 0.5
    out.append(f"1-minute load average: {load['start']:.2f} at the start, {load['end']:.2f} at the end"
               + (" — the machine was doing other work as well, so the figures are noisier (and lower) than on a "
                  "quiet machine." if busy else "."))
    if report["preset"] == "quick":
        out.append("")
        out.append("**Quick run**: small sizes (`--quick`), to check that everything runs; the figures are indicative "
                   "only. The goals are set for the full sizes (`bench/report.py` without `--quick`).")
    if report.get("only"):
        out.append("")
        out.append(f"Only these benchmarks were run: {', '.join(report['only'])}.")
    out += ["", "| benchmark | figure | goal | met | peer figures |", "|---|---|---|---|---|"]
    for result in results:
        if result["name"] == "peers":
            continue
        if result["status"] == "skipped":
            out.append(f"| `{result['name']}` | skipped: {result['reason']} | | | |")
            continue
        if result["status"] == "failed":
            out.append(f"| `{result['name']}` | **failed**: {result['reason']} (see below) | | ✗ | |")
        for fig in result["figures"]:
            value = f"**{_format(fig['value'])}**{' ' + fig['unit'] if fig['unit'] else ''}"
            if fig.get("detail"):
                value += f" — {fig['detail']}"
            met = {True: "✓ met", False: "✗ **missed**"}.get(fig.get("met"), "")
            out.append(f"| `{result['name']}` | {fig['name']}: {value} | {fig.get('goal', '')} | {met} | "
                       f"{_peer_text(fig, peers) if result['name'] == 'send_throughput' else ''} |")

    out += ["", "## Sending: the pipeline against the peers", "",
            "The same fake Telegram (a real HTTP server on loopback) answers every sendMessage after the given delay, "
            "as the real Bot API's round trip does. The pipeline is `send_message` → Celery worker → fake, with every "
            "message committed and audited; the peers send one message at a time. Peer figures are counted from the "
            "calls the fake received; per message = the gap between consecutive arrivals.", "",
            "| fake answers after | BRAIN Connectors pipeline | plain python-telegram-bot loop | Apprise (`tgram://`) |",
            "|---|---|---|---|"]
    pipeline = {fig["fake_latency_ms"]: fig for result in results if result["name"] == "send_throughput"
                for fig in result["figures"]}
    for latency in sorted(set(pipeline) | set(peers)):
        row = [f"{latency} ms"]
        fig = pipeline.get(latency)
        row.append(f"{_format(fig['pipeline_msg_per_s'])} msg/s" if fig else "—")
        for name in ("plain_ptb_loop", "apprise"):
            peer = peers.get(latency, {}).get(name)
            row.append(f"{_format(peer['value'])} msg/s (per message p50 {_format(peer['per_message_p50_ms'])} ms, "
                       f"p99 {_format(peer['per_message_p99_ms'])} ms)" if peer else "—")
        out.append("| " + " | ".join(row) + " |")

    trouble = [result for result in results if result["status"] != "ok"]
    if trouble:
        out += ["", "## Failed or skipped", ""]
        for result in trouble:
            out.append(f"- `{result['name']}`: {result['status']}, {result['reason']}.")
            if result.get("stderr_tail"):
                out += ["", "  ```", *[f"  {line}" for line in result["stderr_tail"][-15:]], "  ```"]
    out += ["", "## Commands", ""]
    for result in results:
        took = f" ({result['seconds']} s)" if "seconds" in result else ""
        out.append(f"- `{result['command']}`{took}")
    out += ["", "Raw JSON lines and machine details: [latest.json](latest.json).", "", "![chart](latest.png)", ""]
    path.write_text("\n".join(out))


def write_chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = report["results"]
    bars = [(f"{result['name']}: {fig['name']}", attainment(fig), fig) for result in results
            for fig in result["figures"] if attainment(fig) is not None]
    checks = [fig for result in results for fig in result["figures"] if fig.get("goal_op") == "=="]
    peers = _peer_cells(results)
    pipeline = {fig["fake_latency_ms"]: fig["pipeline_msg_per_s"] for result in results
                if result["name"] == "send_throughput" for fig in result["figures"]}
    latencies = sorted(set(pipeline) | set(peers))

    height = max(4.5, 0.55 * len(bars) + 2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, height), gridspec_kw={"width_ratios": [3, 2]})
    if bars:
        labels = [label for label, _, _ in bars][::-1]
        values = [value for _, value, _ in bars][::-1]
        colours = ["#2e7d32" if f.get("met") else "#c62828" for _, _, f in bars][::-1]
        positions = range(len(bars))
        left.barh(positions, values, color=colours)
        left.set_xscale("log")
        left.axvline(1, color="black", linewidth=1)
        left.set_yticks(list(positions), labels, fontsize=8)
        for pos, (_, value, f) in zip(positions, bars[::-1], strict=True):
            text = f"{_format(f['value'])}{' ' + f['unit'] if f['unit'] else ''} (goal {f['goal']})"
            left.annotate(text, (value, pos), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
        lo, hi = min(values + [1]), max(values + [1])
        left.set_xlim(lo / 2, hi * 20)  # room for the value labels right of the longest bar
        left.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        left.set_xlabel("fraction of goal (log scale; ≥ 1 = met: measured/goal for rates, goal/measured for times)")
    met_checks = sum(1 for f in checks if f.get("met"))
    left.set_title(f"Figures against their goals (green met, red missed); exact-count checks met: "
                   f"{met_checks}/{len(checks)}", fontsize=10)

    series = [("BRAIN Connectors pipeline", lambda lat: pipeline.get(lat), "#1565c0"),
              ("plain PTB loop", lambda lat: peers.get(lat, {}).get("plain_ptb_loop", {}).get("value"), "#9e9e9e"),
              ("Apprise", lambda lat: peers.get(lat, {}).get("apprise", {}).get("value"), "#ef6c00")]
    width = 0.8 / len(series)
    for index, (label, value_at, colour) in enumerate(series):
        xs = [i + (index - 1) * width for i in range(len(latencies))]
        ys = [value_at(lat) or 0 for lat in latencies]
        drawn = right.bar(xs, ys, width, label=label, color=colour)
        right.bar_label(drawn, labels=[_format(y) if y else "n/a" for y in ys], fontsize=7)
    right.set_xticks(range(len(latencies)), [f"fake answers after {lat} ms" for lat in latencies])
    right.set_ylabel("messages per second")
    right.set_yscale("log")
    tallest = max([value_at(lat) or 0 for _, value_at, _ in series for lat in latencies] + [10])
    right.set_ylim(1, tallest * 3)  # bars grow from 1 msg/s, so their heights compare on the log scale
    right.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
    right.set_title("Send throughput on the same fake Telegram", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"BRAIN Connectors benchmarks — {report['preset']} run, {report['machine']['date']}, "
                 f"load {report['load_average_1min']['start']:.1f}→{report['load_average_1min']['end']:.1f}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
