"""Run and time a TVM build on a remote board through TVM's own RPC tracker (the device farm).

On a host both sides can reach:   python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190
On each board (TVM runtime only): python -m edgecnn.rpc_server --tracker HOST:9190 --key rpi4
                                  (or TVM's plain python -m tvm.exec.rpc_server, which cannot report the
                                  board's state)
Then `edgecnn bench BUILD_DIR --rpc HOST:9190 --key rpi4` uploads the build's .so to a free board with
that key, runs it there and times it with the board's own clock (TVM's time_evaluator), so network
round trips are not in the numbers; the board reads its own state and power around the runs (BoardProbe).
`--boards N` holds N boards at once and times them in parallel; `edgecnn verify --rpc` runs the parity check
on a board; `edgecnn tune --rpc` times candidates on every free board at once (tune.board_timers).
"""

import functools
import json
import socket
import struct
import sys
from pathlib import Path

import numpy as np

from edgecnn.backends.base import DEFAULT_SECONDS, MAX_RUNS, MIN_RUNS
from edgecnn.backends.tvm.build import require_tvm
from edgecnn.backends.tvm.runner import VmRunner
from edgecnn.backends.tvm.server import FUNCTION
from edgecnn.core import manifest as manifest_mod
from edgecnn.core.errors import EdgecnnError, suggest

DEFAULT_PORT = 9190


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'HOST', port 9190) -> (host, port)."""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(DEFAULT_PORT))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgecnnError(f"--rpc {address}: give the tracker as HOST:PORT, e.g. 192.168.1.10:{DEFAULT_PORT}")
    return host, int(port)


def probe_tracker(host: str, port: int, timeout: float) -> None:
    """Fail within `timeout` seconds unless an RPC tracker answers at host:port (TVM itself retries for 60 s)."""
    from tvm.rpc import base

    start = f"python -m edgecnn.rpc_tracker --host 0.0.0.0 --port {port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            reply = sock.recv(4)
    except (socket.timeout, TimeoutError):
        raise EdgecnnError(f"RPC tracker {host}:{port} did not answer within {timeout:g} s: is it running "
                           f"({start}) and is the port open?") from None
    except OSError as e:
        raise EdgecnnError(f"RPC tracker {host}:{port} not reachable ({e.strerror or e}): start it with "
                           f"{start}") from None
    if len(reply) != 4 or struct.unpack("<i", reply)[0] != base.RPC_TRACKER_MAGIC:
        raise EdgecnnError(f"{host}:{port} is not a TVM RPC tracker (no tracker handshake): check the port")


def board_keys(tracker) -> dict[str, int]:
    """Keys of the RPC servers registered with the tracker -> how many are free now."""
    summary = tracker.summary()
    keys = {info["key"].split(":", 1)[1]: 0 for info in summary["server_info"] if ":" in info.get("key", "")}
    for key, queue in summary["queue_info"].items():
        if key in keys:
            keys[key] = queue["free"]
    return keys


def count_boards(address: str, key: str, timeout: float = 10.0) -> dict:
    """{"registered": boards with `key`, "free": those not in a session now}; EdgecnnError if none has it."""
    tvm = require_tvm()
    host, port = parse_address(address)
    probe_tracker(host, port, timeout)
    summary = tvm.rpc.connect_tracker(host, port).summary()
    registered = [info for info in summary["server_info"] if info.get("key", "").partition(":")[2] == key]
    if not registered:
        keys = {info["key"].partition(":")[2] for info in summary["server_info"] if ":" in info.get("key", "")}
        known = suggest(key, keys) if keys else "; no board is registered"
        raise EdgecnnError(f"no board with key '{key}' is registered with the tracker {host}:{port}{known}; on "
                           f"the board run: python -m edgecnn.rpc_server --tracker {host}:{port} --key {key}")
    return {"registered": len(registered), "free": summary["queue_info"].get(key, {}).get("free", 0)}


def _reserve(host: str, port: int, key: str, timeout: float) -> tuple[str, int, str]:
    """The tracker's REQUEST (as TVM's TrackerSession.request), which also says which board it gave:
    (board host, board port, match key); waits in the tracker's queue while every board is busy."""
    from tvm.rpc import base

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
            raise EdgecnnError(f"{host}:{port} is not a TVM RPC tracker (no tracker handshake): check the port")
        sock.settimeout(None)
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        code, value = base.recvjson(sock)
    if code != base.TrackerCode.SUCCESS:
        raise EdgecnnError(f"the tracker {host}:{port} refused a '{key}' board: {value}")
    return tuple(value)


def request_board(address: str, key: str, timeout: float = 10.0, *, session_timeout: float = 0,
                  quiet: bool = False) -> tuple:
    """(an RPC session on a board registered as `key`, that board's HOST:PORT); while every board is busy it
    waits in the tracker's queue. The session holds the board until it is dropped."""
    tvm = require_tvm()
    host, port = parse_address(address)
    if count_boards(address, key, timeout)["free"] == 0 and not quiet:
        print(f"every '{key}' board is busy: waiting in the tracker's queue", file=sys.stderr)
    try:
        board_host, board_port, match = _reserve(host, port, key, timeout)
        return tvm.rpc.connect(board_host, board_port, match, session_timeout), f"{board_host}:{board_port}"
    except (OSError, RuntimeError) as e:  # the socket, or TVM's connect (several error types)
        raise EdgecnnError(f"the tracker {host}:{port} could not connect us to a '{key}' board: {e}") from None


def request_session(address: str, key: str, timeout: float = 10.0):
    """An RPC session on a board registered as `key` (request_board without the board's address)."""
    return request_board(address, key, timeout)[0]


class RemoteRunner(VmRunner):
    """A TVM build running on a board from the tracker; `time_runs` times it with the board's own clock."""

    def __init__(self, build_dir: str | Path, address: str, key: str, *, timeout: float = 10.0,
                 threads: int | None = None):
        man = manifest_mod.read(build_dir)
        if man["backend"] != "tvm":
            raise EdgecnnError(f"--rpc runs TVM builds on boards; {build_dir} is a {man['backend']} build")
        art = man["artifact"]
        super().__init__([o["name"] for o in man["outputs"]], art.get("batch"), man["input"]["shape"][1:],
                         man["input"].get("dtype", "float32"))
        self.session, self.board = request_board(address, key, timeout)
        self.name = f"tvm on '{key}' board {self.board} via {address}"
        if threads:
            self.session.get_function("runtime.config_threadpool")(1, threads)  # 1: all (big) cores
        device = self.session.cpu()
        self.attach(self._load(Path(build_dir) / art["file"], man["files"][art["file"]], art.get("tvm_target", {}),
                               device), device)

    def _load(self, so_path: Path, digest: str, target: dict, device):
        from tvm import relax

        remote_name = f"edgecnn-{digest[:16]}.so"  # one file per build: sessions may share the board's dir
        self.session.upload(str(so_path), target=remote_name)
        try:
            return relax.VirtualMachine(self.session.load_module(remote_name), device)
        except Exception as e:  # the remote error arrives as one of several TVM error types
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise EdgecnnError(f"the board cannot load {so_path.name}, compiled for "
                               f"{target.get('mtriple', 'this host')} {target.get('mcpu', '')}: {reason} "
                               "(compile for the board's target, e.g. --target rpi4)") from None

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        # the stateful calls: a tuple of outputs stays on the board as one remote object (a plain call returns
        # it unreadable), so read it field by field. Not VirtualMachine.get_outputs: its recursive closure
        # is a reference cycle holding the VM, and so the session and the board, until a garbage collection.
        self.vm.set_input("main", self.tvm.runtime.tensor(x, self.device))
        self.vm.invoke_stateful("main")
        arity, get = self.vm.module["get_output_arity"]("main"), self.vm.module["get_output"]
        outs = [get("main")] if arity == -1 else [get("main", i) for i in range(arity)]
        return {n: o.numpy() for n, o in zip(self.output_names, outs)}

    def time_runs(self, x: np.ndarray, *, warmup: int, runs: int | None, seconds: float | None,
                  tick=None) -> np.ndarray:
        """Per-run latencies in ns measured on the board: `runs` runs, else as many as fit in `seconds`."""
        self.vm.set_input("main", self.tvm.runtime.tensor(np.ascontiguousarray(x, self.input_dtype), self.device))

        def timed(number: int, repeat: int) -> list[float]:  # TVM discards one extra first call as warm-up
            evaluator = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
            return list(evaluator("main").results)

        if warmup:
            timed(warmup, 1)
        if not runs:
            probe = float(np.mean(timed(1, MIN_RUNS)))
            runs = int(np.clip((seconds or DEFAULT_SECONDS) / max(probe, 1e-9), MIN_RUNS, MAX_RUNS))
        return np.array([int(t * 1e9) for t in timed(1, runs)], np.int64)

    def memory(self) -> dict:
        return {"peak_rss_mib": None, "runner_rss_mib": None, "gpu_mib": None, "note": "remote: not measured"}

    def device_probe(self) -> "BoardProbe":
        return BoardProbe(self.session, self.name)

    def close(self) -> None:
        # Dropping the last reference to the session (a remote device holds one too) closes the
        # connection, which frees the board for the next request.
        self.vm = self.main = self.device = self.session = None


class BoardProbe:
    """The board's own state reader (edgecnn.device.conditions.Probe, served by edgecnn.rpc_server); on a
    board running TVM's plain rpc_server every reading is a note saying so."""

    def __init__(self, session, board: str):
        try:
            self.remote = session.get_function(FUNCTION)
            self.note = None
        except AttributeError:  # "Module has no function": TVM's plain server
            self.remote = None
            self.note = (f"the board ({board}) runs TVM's plain rpc_server, which cannot read its state: start "
                         "it with python -m edgecnn.rpc_server --tracker HOST:PORT --key KEY (pip install "
                         "--no-deps edgecnn there)")

    def call(self, method: str, *args, fallback=None):
        if self.remote is None:
            return fallback
        return json.loads(self.remote(method, json.dumps(args)))

    def reading(self, method: str) -> dict:
        try:
            return self.call(method, fallback={"unavailable": self.note})
        except Exception as e:  # the board's error arrives as one of several TVM error types
            lines = str(e).strip().splitlines()
            return {"unavailable": f"the board's reader failed: {lines[-1] if lines else type(e).__name__}"}

    def state(self) -> dict:
        return self.reading("state")

    def meter_start(self) -> None:
        self.call("meter_start")

    def meter_stop(self) -> dict:
        return self.reading("meter_stop")

    def lock_clocks(self) -> dict:
        return self.call("lock_clocks", fallback={"done": [], "not_done": [self.note], "restore": {}})

    def restore_clocks(self, record: dict) -> dict:
        return self.call("restore_clocks", record, fallback={"restored": [], "failed": []})


def loader(build_dir: str | Path, address: str, key: str | None = None, *, timeout: float = 10.0,
           threads: int | None = None):
    """A picklable callable making the RemoteRunner (for edgecnn.bench); key defaults to the build's target."""
    if key is None:
        key = manifest_mod.read(build_dir, check_files=False)["target"]["name"]
    parse_address(address)
    return functools.partial(RemoteRunner, str(build_dir), address, key, timeout=timeout, threads=threads)
