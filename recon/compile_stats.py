"""XLA compilation: the persistent cache (a second run of the same shapes compiles nothing) and counters of the
compilations a run makes and the seconds they take, for metrics.jsonl."""

from __future__ import annotations

import os

import jax

COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
_counts = {"compilations": 0, "compile_seconds": 0.0, "cache_hits": 0}
_listening = False


def default_cache_folder() -> str:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/recon/jax`` (``~/.cache/recon/jax``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "recon", "jax")


def use_persistent_cache(folder: str | None) -> None:
    """Compiled programs kept in ``folder`` (none when empty) and reused by later runs."""
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def _duration(name: str, seconds: float, **_) -> None:
    if name in COMPILE_EVENTS:
        _counts["compile_seconds"] += seconds
        if name == COMPILE_EVENTS[0]:
            _counts["compilations"] += 1


def _event(name: str, **_) -> None:
    if name == "/jax/compilation_cache/cache_hits":
        _counts["cache_hits"] += 1


def start() -> None:
    """Count from now on (listeners registered once per process)."""
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_duration)
        jax.monitoring.register_event_listener(_event)
        _listening = True


def snapshot() -> dict:
    """Programs compiled so far in this process (not read from the persistent cache), the seconds spent lowering,
    compiling or loading them, and persistent-cache hits."""
    return {"compilations": _counts["compilations"] - _counts["cache_hits"], "compile_seconds": round(_counts["compile_seconds"], 3),
            "cache_hits": _counts["cache_hits"]}
