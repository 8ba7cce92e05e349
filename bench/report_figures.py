"""The benchmark report's figures: each benchmark's JSON lines read into headline figures with goals."""

import operator

# --- figures -----------------------------------------------------------------------------------

OPS = {">=": (operator.ge, "≥"), ">": (operator.gt, ">"), "<=": (operator.le, "≤"), "<": (operator.lt, "<"),
       "==": (operator.eq, "=")}


def figure(name, value, unit="", op=None, target=None, detail="", met=None, **extra):
    """One headline figure. With a goal (`op` and `target`), `met` is computed unless given (some
    goals also carry a condition the benchmark checked itself, e.g. no events missing)."""
    result = {"name": name, "value": value, "unit": unit, "detail": detail, **extra}
    if op is not None:
        compare, symbol = OPS[op]
        result.update(goal=f"{symbol} {target}{' ' + unit if unit else ''}", goal_op=op, goal_value=target)
        result["met"] = met if met is not None else (value is not None and bool(compare(value, target)))
    return result


def attainment(fig):
    """How far a figure is from its goal as one number, ≥ 1 when met: measured/goal for figures
    that should be high, goal/measured for ones that should be low. None for exact-count goals
    (lost = 0), which are pass/fail and have no scale."""
    op, target, value = fig.get("goal_op"), fig.get("goal_value"), fig.get("value")
    if op is None or value is None or op == "==":
        return None
    if op in (">=", ">"):
        return value / target if target else None
    return target / value if value > 0 else None


def select(lines, **match):
    return [line for line in lines if all(line.get(k) == v for k, v in match.items())]


def first(lines, **match):
    found = select(lines, **match)
    if not found:
        raise LookupError(f"no line with {match}")
    return found[-1]


# The goals of issue 16: the pipeline against a plain PTB loop (which sends one message at a time, so a
# latency-bound loop is what a concurrent pipeline should beat several times over) and against Apprise.
RATIO_GOALS = {0: 0.8, 30: 3}
APPRISE_RATIO_GOAL = 1.0
CPU_MS_PER_MESSAGE_GOAL = 10


def extract_send_throughput(lines):
    figures = []
    for ratio in [line for line in lines if "ratio_vs_plain" in line]:
        latency = ratio["fake_latency_ms"]
        pipeline = first(lines, path="pipeline", fake_latency_ms=latency)
        plain = first(lines, path="plain_ptb_loop", fake_latency_ms=latency)
        goal = ratio.get("goal", RATIO_GOALS.get(latency, 0.8))
        figures.append(figure(
            f"pipeline ÷ plain PTB loop msg/s, fake answers after {latency} ms", ratio["ratio_vs_plain"], "", ">=", goal,
            detail=f"pipeline {pipeline['msg_per_s']} msg/s (enqueue→sent p50 {pipeline['enqueue_to_sent_p50_ms']} ms, "
                   f"p99 {pipeline['enqueue_to_sent_p99_ms']} ms), plain loop {plain['msg_per_s']} msg/s, "
                   f"{pipeline['messages']} messages",
            fake_latency_ms=latency, pipeline_msg_per_s=pipeline["msg_per_s"]))
        if "cpu_ms_per_msg" in pipeline:
            parts = ", ".join(f"{key[len('cpu_ms_'):]} {value}" for key, value in pipeline.items()
                              if key.startswith("cpu_ms_") and key != "cpu_ms_per_msg")
            figures.append(figure(
                f"CPU-ms per delivered message, all processes, fake answers after {latency} ms",
                pipeline["cpu_ms_per_msg"], "ms", "<=", CPU_MS_PER_MESSAGE_GOAL,
                detail=f"CPU-ms over the run by part: {parts}" if parts else "", fake_latency_ms=latency))
    if not figures:
        raise LookupError("no ratio_vs_plain line")
    return figures


def extract_send_latency(lines):
    pipeline = first(lines, bench="send_throughput", path="pipeline")
    return [figure(
        "enqueue → sent p99 at 100 msg/s offered, fake answers after 30 ms", pipeline["enqueue_to_sent_p99_ms"], "ms",
        "<", 200, detail=f"p50 {pipeline['enqueue_to_sent_p50_ms']} ms; achieved {pipeline['msg_per_s']} msg/s over "
                         f"{pipeline['messages']} messages")]


def apprise_figures(results):
    """The pipeline's msg/s over Apprise's at each fake latency, from the same report run (goal ≥ 1)."""
    by_name = {result["name"]: result for result in results}
    send, peers = by_name.get("send_throughput"), by_name.get("peers")
    if not send or not peers:
        return []
    apprise = {fig["fake_latency_ms"]: fig for fig in peers["figures"] if fig.get("peer") == "apprise"}
    figures = []
    for fig in send["figures"]:
        latency, pipeline = fig.get("fake_latency_ms"), fig.get("pipeline_msg_per_s")
        peer = apprise.get(latency)
        if pipeline is None or not peer or not peer.get("value"):
            continue
        figures.append(figure(
            f"pipeline ÷ Apprise msg/s, fake answers after {latency} ms", round(pipeline / peer["value"], 3), "",
            ">=", APPRISE_RATIO_GOAL, detail=f"pipeline {pipeline} msg/s, Apprise {peer['value']} msg/s",
            fake_latency_ms=latency))
    return figures


def extract_peers(lines):
    figures = []
    for line in select(lines, bench="peers"):
        figures.append(figure(
            f"{line['peer']} msg/s, fake answers after {line['fake_latency_ms']} ms", line["msg_per_s"], "msg/s",
            detail=f"{line['received']}/{line['messages']} received by the fake; per message p50 "
                   f"{line.get('per_message_p50_ms')} ms, p99 {line.get('per_message_p99_ms')} ms",
            peer=line["peer"], fake_latency_ms=line["fake_latency_ms"],
            per_message_p50_ms=line.get("per_message_p50_ms"), per_message_p99_ms=line.get("per_message_p99_ms")))
    if not figures:
        raise LookupError("no peers line")
    return figures


def extract_webhook_ingest(lines):
    line = first(lines, bench="webhook_ingest")
    if line["client"] == "wrk":
        acknowledged = line["requests"] - line["non_2xx"]
        how = f"wrk, {line['processes']} daphne processes, {line['concurrency']} connections"
    else:
        acknowledged = line["ok"]
        how = f"python client ({line['requests']} requests, {line['concurrency']} connections; wrk not installed)"
    unstored = max(0, acknowledged - line["stored"])
    return [
        figure("ingest req/s", line["req_per_s"], "req/s", ">=", 300, detail=how),
        figure("ingest p99", line["p99_ms"], "ms", "<", 50, detail=f"p50 {line['p50_ms']} ms"),
        figure("acknowledged webhooks not stored", unstored, "", "==", 0,
               detail=f"{acknowledged} acknowledged, {line['stored']} stored"),
    ]


def extract_mcp_latency(lines):
    figures = []
    for line in select(lines, bench="mcp_latency", transport="stdio"):
        http = select(lines, bench="mcp_latency", transport="streamable-http", tool=line["tool"])
        detail = f"p99 {line['p99_ms']} ms over {line['calls']} calls"
        if http:
            detail += f"; streamable HTTP p50 {http[-1]['p50_ms']} ms, p99 {http[-1]['p99_ms']} ms"
        figures.append(figure(f"MCP {line['tool']} p50 (stdio)", line["p50_ms"], "ms", "<", 10, detail=detail))
    if not figures:
        raise LookupError("no stdio line")
    return figures


def extract_event_latency(lines):
    line = first(lines, bench="event_latency")
    return [
        figure("commit → websocket client p99", line["p99_ms"], "ms", "<", 50,
               detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['rate_per_s']} events/s to "
                      f"{line['clients']} clients, {line['deliveries']} deliveries"),
        figure("events missing or out of order", line["missing"] + line["out_of_order"], "", "==", 0,
               detail=f"missing {line['missing']}, out of order {line['out_of_order']}"),
    ]


def extract_bus_bridge(lines):
    """bench/bus_bridge.py: the backlog's events/s through `runbridge` and the steady phase's commit → ack lag."""
    figures = []
    for line in select(lines, bench="bus_bridge", phase="backlog")[-1:]:
        figures.append(figure(
            "bus bridge events/s to JetStream (backlog)", line["events_per_s"], "events/s", ">=", 2000,
            detail=f"{line['events']} events, batch {line['batch_size']}; bridge CPU "
                   f"{line['bridge_cpu_ms_per_event']} ms/event"))
    for line in select(lines, bench="bus_bridge", phase="steady")[-1:]:
        figures.append(figure(
            "commit → JetStream ack p99", line["p99_ms"], "ms", "<", 100,
            detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['rate_per_s']} events/s offered, "
                   f"{line['events']} events"))
    phases = select(lines, bench="bus_bridge")
    if not figures:
        raise LookupError("no bus_bridge line")
    lost = sum(line["missing"] + line["duplicates"] + line["out_of_order"] for line in phases)
    figures.append(figure("bus events missing, duplicated or out of order", lost, "", "==", 0))
    return figures


def extract_dashboard_latency(lines):
    """bench/dashboard_latency.py: REST send → the message's row in the dashboard's DOM, in headless Chromium."""
    line = first(lines, bench="dashboard_latency")
    return [
        figure("REST send → dashboard feed row p99", line["p99_ms"], "ms", "<", 1000,
               detail=f"p50 {line['p50_ms']} ms, max {line['max_ms']} ms; {line['shown']} messages, one every "
                      f"{line['interval_s']} s"),
        figure("messages missing from the dashboard", line["missing"], "", "==", 0),
    ]


def extract_routing(lines):
    warm, cold = first(lines, bench="routing", phase="warm"), first(lines, bench="routing", phase="cold")
    seed = select(lines, bench="routing", phase="seed")
    size = f"{seed[-1]['users']:,} people" if seed else ""
    return [
        figure("decide() p99, warm (cached)", warm["p99_ms"], "ms", "<=", 2,
               detail=f"p50 {warm['p50_ms']} ms, {warm['queries']} queries; {size}"),
        figure("decide() p99, cold (cache cleared)", cold["p99_ms"], "ms", "<=", 2,
               detail=f"p50 {cold['p50_ms']} ms; {cold['decisions']} decisions"),
    ]


def extract_conversations(lines):
    context = first(lines, bench="conversations", phase="get_context")
    search = first(lines, bench="conversations", phase="search")
    rotate = first(lines, bench="conversations", phase="rotate_keys")
    seed = select(lines, bench="conversations", phase="seed")
    size = f"{seed[-1]['messages']:,} messages" if seed else ""
    return [
        figure("get_context p99", context["p99_ms"], "ms", "<", 5, detail=f"p50 {context['p50_ms']} ms; {size}"),
        figure("search p95", search["p95_ms"], "ms", "<", 50,
               detail=f"p50 {search['p50_ms']} ms, p99 {search['p99_ms']} ms; {search['queries']} queries"),
        figure("rotate_keys rate", rotate["rows_per_s"], "rows/s",
               detail=f"{rotate['rows']:,} rows; whole table ≈ {rotate['full_table_estimate_s']} s"),
    ]


def extract_chaos(lines):
    """bench/chaos.py's verdict: nothing lost, no inbound duplicates, outbound duplicates within
    their bound (at most one per worker killed between the platform's answer and the commit)."""
    verdict = first(lines, bench="chaos", part="verdict")
    run = select(lines, bench="chaos", part="run")
    chaos = select(lines, bench="chaos", part="chaos")
    context = []
    if run:
        context.append(f"{run[-1].get('messages'):,} messages, settled {run[-1].get('settled')}")
    if chaos:
        kills = {k: v for k, v in chaos[-1].items() if isinstance(v, int) and not isinstance(v, bool)}
        context.append(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kills.items()))
    bound = verdict.get("outbound_duplicate_bound")
    return [
        figure("messages lost", verdict["lost"], "", "==", 0, detail="; ".join(context)),
        figure("inbound duplicates", verdict["inbound_duplicates"], "", "==", 0),
        figure("outbound duplicates within their bound", int(bool(verdict["bound_held"])), "", "==", 1,
               detail=f"{verdict['outbound_duplicates']} outbound duplicates, bound {bound}; 1 = held"),
        figure("verdict ok", int(bool(verdict["ok"])), "", "==", 1,
               detail="; ".join(verdict.get("reasons") or []) or "1 = ok"),
    ]
