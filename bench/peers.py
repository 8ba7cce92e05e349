"""Peers on the same loopback fake Telegram as bench/send_throughput.py: what sending N messages
costs without BRAIN Connectors, for comparison with the pipeline's msg/s at the same fake latency.

- `plain_ptb_loop`: python-telegram-bot's `Bot.send_message` awaited in a loop, one message at a
  time (the same loop as send_throughput.py's, imported from it);
- `apprise`: Apprise 2.x with one `tgram://<token>/<chat_id>` URL per chat, `notify()` called
  once per message. Apprise's Telegram plugin has its API base hard-coded in
  `NotifyTelegram.notify_url`; setting that attribute to the fake's `/bot` base is configuration,
  the sendMessage calls really go over HTTP to the fake.

Figures are counted from what the fake received, not from what the client believes it sent: the
messages are the sendMessage calls the fake answered 200, msg/s is that count over the wall time of
the loop, and the per-message latency is the gap between consecutive sendMessage arrivals at the
fake (for a one-at-a-time sender, that is one whole send: request, the fake's delay, the answer,
the client's own work). A run where the fake did not receive all N messages is reported as failed.

    .venv/bin/python bench/peers.py --messages 1000 --chats 50 --latencies-ms 0,30
"""
import argparse
import sys
import time

from common import ROOT, emit, summary_ms
from send_throughput import TOKEN, plain_loop_run

sys.path.insert(0, str(ROOT))


def received_figures(fake, messages, seconds, since=0):
    """msg/s and per-message gaps from the sendMessage calls the fake accepted (from its
    `since`-th recorded call on)."""
    calls = [call for call in fake.calls[since:] if call.method == "sendMessage"]
    accepted = [call for call in calls if call.status == 200]
    arrivals = sorted(call.received_at for call in accepted)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    figures = {
        "messages": messages,
        "received": len(accepted),
        "refused": len(calls) - len(accepted),
        "seconds": round(seconds, 3),
        "msg_per_s": round(len(accepted) / seconds, 1) if seconds else None,
    }
    if gaps:
        figures.update({f"per_message_{k}": v for k, v in summary_ms(gaps).items()})
    return figures


def ptb_run(args, fake):
    result = plain_loop_run(args, fake)  # resets the fake, then sends args.messages one by one
    return received_figures(fake, args.messages, result["seconds"])


def apprise_run(args, fake):
    import apprise
    from apprise.plugins.telegram import NotifyTelegram

    official = NotifyTelegram.notify_url
    NotifyTelegram.notify_url = f"{fake.url}/bot"
    try:
        # One Apprise object per chat, built once, as an application notifying a fixed set of chats would.
        senders = {}
        for chat in range(args.chats):
            sender = apprise.Apprise()
            if not sender.add(f"tgram://{TOKEN}/{5550000000 + chat}"):
                raise SystemExit("apprise refused the tgram:// URL")
            senders[chat] = sender
        since = len(fake.calls)  # counted from here on; the fake's settings stay as they are
        started = time.perf_counter()
        for i in range(args.messages):
            if not senders[i % args.chats].notify(body=f"apprise message {i}"):
                raise SystemExit(f"apprise reported a failed notify at message {i}")
        return received_figures(fake, args.messages, time.perf_counter() - started, since)
    finally:
        NotifyTelegram.notify_url = official


PEERS = {"plain_ptb_loop": ptb_run, "apprise": apprise_run}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--latencies-ms", default="0,30", help="the fake's answer delays to measure at")
    parser.add_argument("--peers", default=",".join(PEERS), help="which peers to run")
    args = parser.parse_args()
    latencies = [int(value) for value in args.latencies_ms.split(",")]
    peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; use {', '.join(PEERS)}")

    from tests.fakes.telegram_server import FakeTelegram

    fake = FakeTelegram().start()
    complete = True
    try:
        for latency_ms in latencies:
            fake.latency_seconds = latency_ms / 1000
            for name in peers:
                figures = PEERS[name](args, fake)
                complete &= figures["received"] == args.messages
                emit(bench="peers", peer=name, fake_latency_ms=latency_ms, chats=args.chats,
                     all_received=figures["received"] == args.messages, **figures)
    finally:
        fake.stop()
    if not complete:
        raise SystemExit("the fake did not receive every message from a peer (see all_received)")


if __name__ == "__main__":
    main()
