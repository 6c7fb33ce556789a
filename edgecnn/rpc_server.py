"""The board side of the device farm, as documented: `python -m edgecnn.rpc_server --tracker HOST:PORT --key KEY`
is TVM's rpc_server plus the board's device-state reader. The code lives in edgecnn.backends.tvm.server."""

from edgecnn.backends.tvm.server import FUNCTION, main

__all__ = ["FUNCTION", "main"]

if __name__ == "__main__":
    main()
