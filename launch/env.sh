# Sourced by the Makefile and .ci/run: a fast allocator for XLA on CPU.
# glibc malloc returns XLA's large temporaries to the kernel after every step and
# page-faults them back (~2 GiB/step measured); jemalloc with decay off keeps them,
# which made a GPICL train step 2x faster on the 2-core dev machine.
for lib in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2; do
  if [ -f "$lib" ]; then
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    export MALLOC_CONF="${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}"
    break
  fi
done
