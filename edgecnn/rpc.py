"""The device farm, as documented: `edgecnn.rpc.RemoteRunner(BUILD_DIR, "HOST:PORT", KEY)` runs a TVM build
on a board of a TVM RPC tracker. The code lives in edgecnn.backends.tvm.rpc."""

from edgecnn.backends.tvm.rpc import (DEFAULT_PORT, RemoteRunner, board_keys, count_boards, loader,
                                      parse_address, request_board, request_session)

__all__ = ["DEFAULT_PORT", "RemoteRunner", "board_keys", "count_boards", "loader", "parse_address",
           "request_board", "request_session"]
