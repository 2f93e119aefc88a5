"""Where models come from: one module per kind of reference (the store stage's sources).

`hf` (hf://, Hugging Face), `oci` (oci://, any registry), `ollama` (ollama://, Ollama's
registry, OCI underneath), `url` (https:// and http:// files). Each turns a `ModelRef` into
`RemoteFile`s for `store.pull` to download; none writes to the store or prints.
"""
