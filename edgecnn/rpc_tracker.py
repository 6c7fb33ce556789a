"""The device farm's tracker, as documented: `python -m edgecnn.rpc_tracker --port 9190` is TVM's RPC tracker
that stops its worker process on SIGTERM. The code lives in edgecnn.backends.tvm.server."""

from edgecnn.backends.tvm.server import tracker_main as main

__all__ = ["main"]

if __name__ == "__main__":
    main()
