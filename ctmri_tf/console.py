"""What the console shows: library noise silenced at the entry points, real errors kept.

Every command of ctmri-tf (``ctmri``, ``python -m train.*``, ``python -m datasets.ctmri``,
``python -m export.saved_model``, ``make demo``) calls :func:`quiet` first, before TensorFlow is
imported. Without ``--verbose`` it hides what a user cannot act on:

* TensorFlow's C++ INFO and WARNING logs (``TF_CPP_MIN_LOG_LEVEL=2``; errors stay), e.g. the
  ``cache_dataset_ops`` warnings that break a progress bar;
* the native start-up banners that TensorFlow prints before its logging is initialised, which no
  log level silences: oneDNN's "custom operations are on", "Could not find cuda drivers", the
  CPU-instruction notice and, on a machine without a GPU, "failed call to cuInit". They are
  removed from the process's native standard error (file descriptor 2, filtered line by line
  by a thread; see :data:`NATIVE_NOISE`). Every other native line passes through unchanged;
  Python's own ``sys.stderr`` (progress bars, warnings, tracebacks) bypasses the filter.
* deprecation warnings raised inside tensorflow-datasets, Keras, TensorFlow, absl and kfp
  (e.g. ``FeatureConnector.dtype is deprecated``, kfp's "Compiling to JSON is deprecated"), and TensorFlow's and absl's Python INFO /
  WARNING logs. ctmri-tf's own warnings (:class:`ctmri_tf.errors.CtmriInputWarning` and
  ``UserWarning``\\ s about the user's data) are never hidden.

``--verbose`` (or ``CTMRI_VERBOSE=1``) shows everything. A ``TF_CPP_MIN_LOG_LEVEL`` set by the
user is respected.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings

VERBOSE_ENV = "CTMRI_VERBOSE"

NATIVE_NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"mlir_graph_optimization_pass\.cc.*MLIR V1 optimization pass is not enabled",
]))
"""Native start-up lines that say nothing a user can act on (matched anywhere in a line)."""

_PYTHON_NOISE = (
    # (message regex, category, module regex)
    (r".*is deprecated", DeprecationWarning, r"(tensorflow_datasets|keras|tensorflow|absl|"
                                             r"keras_cv|tf_keras|google|jax|pkg_resources)"),
    (r".*", DeprecationWarning, r"(tensorflow_datasets|keras_cv|absl|google\.protobuf|kfp)"),
    (r".*FeatureConnector\.dtype is deprecated.*", Warning, r".*"),
    (r".*np\.find_common_type is deprecated.*", Warning, r".*"),
)

_state = {"quiet": False, "thread": None, "saved_fd": None}


def verbose_requested(argv: list[str] | None = None) -> bool:
    """``--verbose`` in ``argv`` (default ``sys.argv``) or ``CTMRI_VERBOSE=1``."""
    argv = sys.argv[1:] if argv is None else argv
    return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet(verbose: bool | None = None) -> None:
    """Silence library noise for this process (see the module docstring); idempotent.

    Call it before TensorFlow is imported: the native banners are printed at import. With
    ``verbose`` (default: :func:`verbose_requested`) nothing is hidden.
    """
    if verbose is None:
        verbose = verbose_requested()
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    if _state["quiet"]:
        return
    _state["quiet"] = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for message, category, module in _PYTHON_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("tensorflow", "absl", "tensorflow_datasets", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _filter_native_stderr()
    try:  # absl's Python logger is also what tfds and TensorFlow's Python side log through
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def _filter_native_stderr() -> None:
    """Route file descriptor 2 through a thread that drops :data:`NATIVE_NOISE` lines.

    ``sys.stderr`` is re-opened on a duplicate of the original descriptor first, so Python's
    output (progress bars with ``\\r``, tracebacks) reaches the terminal directly and at once;
    only what native code writes to fd 2 goes through the filter, line by line.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError, AttributeError):
        return                                   # no usable fd 2 (embedded interpreter)
    original = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8",
                         errors="backslashreplace", closefd=True)
    os.dup2(write_end, 2)
    os.close(write_end)
    if getattr(sys.stderr, "fileno", None) is not None:
        try:
            if sys.stderr.fileno() == 2:
                sys.stderr = original
        except (OSError, ValueError):
            pass                                 # pytest's capture: leave its stream alone

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while True:
                chunk = source.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [line for line in lines
                        if not NATIVE_NOISE.search(line.decode("utf-8", "replace"))]
                if kept:
                    os.write(saved, b"\n".join(kept) + b"\n")
            if pending and not NATIVE_NOISE.search(pending.decode("utf-8", "replace")):
                os.write(saved, pending)

    thread = threading.Thread(target=pump, name="ctmri-native-stderr", daemon=True)
    thread.start()
    _state.update(thread=thread, saved_fd=saved)
    atexit.register(_restore_native_stderr)


def _restore_native_stderr() -> None:
    """At exit: put the original fd 2 back and let the filter drain what is left."""
    saved, thread = _state["saved_fd"], _state["thread"]
    if saved is None:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 2)                            # closes the pipe's last write end
    if thread is not None:
        thread.join(timeout=2.0)
    _state.update(thread=None, saved_fd=None)
