"""One relay under test, as its own process, for bench/relay/run.py.

Reads a JSON request on stdin: ``{"impl": "cython"|"pure", "host": ...,
"engine": bool, "peers": [[a_host, a_port, b_host, b_port], ...]}`` (one
entry per call: the phones' addresses, as their SDP would say), binds two
UDP sockets per call, adds the sessions (latching on) and answers one JSON
line with the relay ports. Then it runs the packet loop in a thread, as the
PBX will (``relay.run(100, duration_ms=-1)``, ended by ``relay.stop()``), and waits for
"stop" on stdin, after which it prints the summed relay counters and exits.

With "engine" true a second Python thread spins on pure-Python work the
whole time, standing in for the PBX's SIP engine thread in the same process
(it runs under SCHED_OTHER, so it only takes the CPU the relay leaves; what
it competes for is the GIL).

    python bench/relay/relay_server.py < request.json
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    request = json.loads(sys.stdin.readline())
    if request["impl"] == "cython":
        from warden_ext import relay as impl

        assert impl.__file__ is not None and impl.__file__.endswith(".so"), impl.__file__
    else:
        from warden.media.pure import relay as impl  # type: ignore[no-redef]
    family = socket.AF_INET6 if ":" in request["host"] else socket.AF_INET
    peers = request["peers"]
    relay = impl.Relay(len(peers))
    sockets: list[socket.socket] = []
    ports = []
    sids = []
    for a_host, a_port, b_host, b_port in peers:
        ra = socket.socket(family, socket.SOCK_DGRAM)
        rb = socket.socket(family, socket.SOCK_DGRAM)
        sockets += [ra, rb]
        for s in (ra, rb):
            s.bind((request["host"], 0))
            s.setblocking(False)
        sids.append(relay.add_session(
            ra.fileno(), rb.fileno(), a_peer=(a_host, a_port), b_peer=(b_host, b_port)
        ))
        ports.append([ra.getsockname()[1], rb.getsockname()[1]])
    stop = threading.Event()
    relayed = [0]

    def loop() -> None:
        run = relay.run
        total = 0
        while not stop.is_set():
            total += run(100, duration_ms=-1)  # until relay.stop()
        relayed[0] = total

    def engine() -> None:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # this thread only
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x = (x + i * i) % 1000003

    thread = threading.Thread(target=loop, name="relay")
    thread.start()
    if request.get("engine"):
        threading.Thread(target=engine, name="engine", daemon=True).start()
    print(json.dumps({"pid": os.getpid(), "ports": ports}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
    finally:
        stop.set()
        relay.stop()
        thread.join(5)
    totals: dict[str, int] = {}
    for sid in sids:
        stats = relay.stats(sid)
        for direction in ("a_to_b", "b_to_a"):
            for key in ("packets", "lost", "dropped_foreign", "dropped_no_peer", "send_errors"):
                totals[key] = totals.get(key, 0) + stats[direction][key]
    totals["relayed"] = relayed[0]
    relay.close()
    for s in sockets:
        s.close()
    print(json.dumps(totals), flush=True)


if __name__ == "__main__":
    main()
