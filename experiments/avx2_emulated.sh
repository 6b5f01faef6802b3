#!/bin/sh
# Run a command with every library's CPU kernels capped to AVX2 + FMA (no AVX-512, VNNI, AMX or bf16), to see on
# an AVX-512 machine what an AVX2-only one would choose and roughly how fast it would be. An approximation, not a
# substitute: clocks, caches and memory stay this machine's, and OpenVINO's own small kernels (MVN) ignore the cap.
#   experiments/avx2_emulated.sh .venv/bin/qa bench --json
export ONEDNN_MAX_CPU_ISA=AVX2           # oneDNN, inside OpenVINO and torch
export MKL_ENABLE_INSTRUCTIONS=AVX2      # MKL, torch's fp32 GEMM
export ATEN_CPU_CAPABILITY=avx2          # torch's own vectorised kernels
export FAISS_OPT_LEVEL=avx2              # FAISS loads its AVX2 build instead of the AVX-512 one
export OPENBLAS_CORETYPE=Haswell         # numpy's BLAS
exec "$@"
