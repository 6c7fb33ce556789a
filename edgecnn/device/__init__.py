"""The device a latency is measured on: its state (clocks, temperatures, throttling), power and clock locks.

Standard library only, and importing nothing else of edgecnn: a board's RPC server reads it with nothing
but Python and the TVM runtime installed; bench and the server both use it.
"""
