"""The Shop's tools: everything beside the chassis that a person or a test
runs — the operators' command line and admin, the RPC client for scripts, the
local stack, the demo with its seed data and traffic generator, the OpenAPI
writer and the pytest fixtures. Services and the chassis never import from
here (tests/contract/test_layout.py)."""
