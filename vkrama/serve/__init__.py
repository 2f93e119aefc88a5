"""The serve stage: a llama-server container from a model, a backend and an image.

Modules, in the order a serve runs: `plan` (ServeRequest + Resolved ─► ContainerSpec, pure,
so --dry-run can print it), `session` (resolve model, device and image, then start),
`ready` (wait until the server answers), `warm` (run it once at the batch sizes it
will serve before it is called ready), `lifecycle` (start, follow in the foreground and
its exit policy, reuse a running server or start one), `containers` (start one until it
serves; find, follow and stop running servers by their labels), `chat` (talk to a
server's OpenAI API), `api` (read its streamed events and word its failures, for `chat`
and the serving bench alike), `rpc` (ggml RPC workers' addresses and their rpc-server
container, pure but for TCP probes) and `workers` (start one until it listens). Nothing
here prints or imports click: progress goes through a Reporter; podman is reached only
through the `Engine` it is handed.
"""
