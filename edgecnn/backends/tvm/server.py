"""edgecnn's RPC server for a board: TVM's own rpc_server, plus the board's device-state reader.

On each board (Python, the apache-tvm wheel and `pip install --no-deps edgecnn`; no torch, no compiler):

    python -m edgecnn.rpc_server --tracker HOST:9190 --key rpi4

It takes the options of `python -m tvm.exec.rpc_server` and registers FUNCTION in the server process
before it serves, so every session (a fork of it) has it: `edgecnn bench --rpc` then records the board's
own clocks, temperatures, throttling and power (edgecnn.device.conditions.Probe) before and after its runs.
"""

import argparse
import json
import logging
import signal
import sys

from edgecnn.device import conditions

FUNCTION = "edgecnn.device"  # FUNCTION(method, JSON list of arguments) -> JSON result
_probe = None  # one per session process: the power meter lives between meter_start and meter_stop


def serve(method: str, args: str) -> str:
    """A Probe method called by the client, as JSON."""
    global _probe
    if method not in conditions.METHODS:
        raise ValueError(f"edgecnn.device: unknown method {method!r} (known: {', '.join(conditions.METHODS)})")
    _probe = _probe or conditions.Probe()
    result = getattr(_probe, method)(*json.loads(args))
    if method == "state":
        result["reader"] = "edgecnn.rpc_server"
    return json.dumps(result)


def register() -> None:
    """TVM's server_init_callback: runs in the server process before it accepts sessions."""
    import tvm

    tvm.register_global_func(FUNCTION, serve, override=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edgecnn.rpc_server",
                                description="TVM's RPC server with edgecnn's device-state reader (for bench --rpc)")
    p.add_argument("--host", default="0.0.0.0", help="the address to bind to")
    p.add_argument("--port", type=int, default=9090, help="the first port to try")
    p.add_argument("--port-end", type=int, default=9199, help="the end of the port range")
    p.add_argument("--tracker", help="the RPC tracker, HOST:PORT (e.g. 10.0.0.2:9190)")
    p.add_argument("--key", default="", help="the key the board registers under (e.g. rpi4)")
    p.add_argument("--custom-addr", help="the address to report to the tracker (behind NAT)")
    p.add_argument("--load-library", help="an extra library to load in each session")
    p.add_argument("--silent", action="store_true", help="log errors only")
    args = p.parse_args(argv)
    if args.tracker and not args.key:
        p.error("--tracker needs --key: the name clients ask the tracker for (e.g. rpi4)")
    return args


def main(argv=None) -> None:
    from edgecnn.backends.tvm.build import require_tvm

    args = parse_args(argv)
    tvm = require_tvm()
    logging.basicConfig(level=logging.ERROR if args.silent else logging.INFO)
    tracker = None
    if args.tracker:
        host, _, port = args.tracker.rpartition(":")
        tracker = (host, int(port))
    server = tvm.rpc.Server(args.host, args.port, args.port_end, key=args.key, tracker_addr=tracker,
                            load_library=args.load_library, custom_addr=args.custom_addr, silent=args.silent,
                            server_init_callback=register)
    print(f"edgecnn rpc_server on port {server.port}{f' as {args.key!r} with {args.tracker}' if tracker else ''}: "
          f"serving {FUNCTION} (device state and power) beside TVM's RPC", flush=True)
    serve_until_stopped(server)


def serve_until_stopped(server) -> None:
    """Wait on TVM's server (or tracker) worker; SIGTERM, SIGHUP or Ctrl-C stop the worker with this process
    (TVM's own `python -m tvm.exec.*` mains leave their popen_worker child running on SIGTERM)."""
    def stop(signum, _frame):
        server.terminate()
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        server.proc.join()
    finally:
        server.terminate()


def tracker_main(argv=None) -> None:
    """python -m edgecnn.rpc_tracker: TVM's RPC tracker (same options as python -m tvm.exec.rpc_tracker) that
    stops its worker when stopped."""
    from edgecnn.backends.tvm.build import require_tvm

    p = argparse.ArgumentParser(prog="python -m edgecnn.rpc_tracker",
                                description="TVM's RPC tracker (the device farm's meeting point); SIGTERM stops it "
                                            "and its worker")
    p.add_argument("--host", default="0.0.0.0", help="the address to bind to")
    p.add_argument("--port", type=int, default=9190, help="the first port to try")
    p.add_argument("--port-end", type=int, default=9199, help="the end of the port range")
    p.add_argument("--silent", action="store_true", help="log errors only")
    args = p.parse_args(argv)
    tvm = require_tvm()
    logging.basicConfig(level=logging.ERROR if args.silent else logging.INFO)
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(args.host, port=args.port, port_end=args.port_end, silent=args.silent)
    print(f"edgecnn rpc_tracker on {args.host}:{tracker.port} (TVM {tvm.__version__})", flush=True)
    serve_until_stopped(tracker)
