"""The boundary: everything read from Redis is decoded and checked here, once.

Events, task messages (waiting lists and the `unacked` hash), inspect replies and
saved history entries may have been written by anyone with access to the broker.
Each is decoded by a typed msgspec decoder that checks types and sizes, text that
is not valid Unicode is replaced, and YAML aliases, oversized bodies and inflating
compression are refused, before the rest of the sidecar sees a value. A bad item
raises `MalformedMessage` and costs only itself.
"""
