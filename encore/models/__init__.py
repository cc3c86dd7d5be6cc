"""Model I/O: loading models, per-family module names, forward hooks, tokens, prefix forwards, devices."""
