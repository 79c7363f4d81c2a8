"""Compile a pure tensor function ahead of time with Inductor and keep the compiled artifact for later runs.

``torch.compile`` re-traces its graphs with Dynamo in every new process (≈ 6 s for stage 1's 8 victim frames on
an H100, even with a warm on-disk cache). Here the whole function, autograd included, is traced once into one
ATen graph (``make_fx``), its tensor constants (the victims' weights) are lifted to inputs, and Inductor compiles
it into a standalone artifact (``torch._inductor.standalone_compile``: the same Python wrapper and kernels as
``torch.compile``) that a later run loads without tracing anything. Lifted tensors that are the caller's ``live``
tensors (the victims' parameters and buffers) are passed to the artifact at each call, not saved with it, so one
artifact serves any weights of the same shapes. The artifact is the bundled kind (``aot=True``: one
self-contained function with its kernels), which loaded faster than the cache-entry kind on an H200 (stage 1
at paper scale: 4.8 s against 6.0–6.3 s, Inductor's import included; benchmarks/README.md). (Not an AOTInductor
``.pt2`` package: on CUDA with torch 2.11 loading any such package crashes the process.)

Contract of ``fn`` (as for :class:`~tsdf_pipeline.defense.cuda_graphs.GraphedFunction`): arguments and results
are (nested tuples / lists / dicts of) tensors; it is pure, without host syncs, data-dependent shapes or random
draws. Everything else it reads besides ``live`` (the targets' names, the config, tensors it builds itself) is
baked into the artifact, so ``key`` must name all of it; the file names are a digest of ``key``, the names and
signatures of the ``live`` tensors, the input signature, torch's version and the device. An artifact holds
compiled code that loading runs: keep ``cache_dir`` as private as the code itself.

Loading an artifact costs seconds of Python (Inductor rebuilds a launcher for each of its kernels: ≈ 2,600 for
stage 1's five artifacts at paper scale). :func:`prefetch` starts that on a thread, for the input signatures earlier
builds listed in ``cache_dir``'s index, so that it overlaps the caller's first device work (PyTorch's operations
release the GIL while they run; cuDNN's autotuning in the first clean pass takes seconds).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten, treespec_dumps, treespec_loads

log = logging.getLogger(__name__)


# What loading an artifact imports (Inductor's runtime and what its generated CUDA code imports): seconds of Python
# in a fresh process (3-6 s measured on the GPU machines), most of a loading run's first epoch besides its GPU work.
_RUNTIME_MODULES = ("torch._inductor.standalone_compile", "torch._inductor.select_algorithm",
                    "torch._inductor.async_compile", "torch._inductor.codegen.memory_planning",
                    "torch._inductor.runtime.triton_heuristics", "triton", "triton.language")
_runtime_import: dict[str, threading.Thread] = {}  # "thread": the import under way or done (once per process)


def import_runtime_in_background() -> None:
    """Start importing what loading an artifact needs on a thread, once per process, so that it overlaps the caller's
    first GPU work (the clean passes and cuDNN's autotuning: PyTorch's operations release the GIL). The first load
    or build waits for it. A module that fails to import here is imported (and fails) again where it is needed."""
    if "thread" not in _runtime_import:
        thread = _runtime_import["thread"] = threading.Thread(target=_import_runtime, name="inductor-runtime-import",
                                                              daemon=True)
        thread.start()


def _import_runtime() -> None:
    for name in _RUNTIME_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # e.g. no Triton on a CPU machine: nothing to warm up
            continue


def _await_runtime_import() -> None:
    if "thread" in _runtime_import:
        _runtime_import["thread"].join()


Signature = tuple[tuple[tuple[int, ...], str, tuple[int, ...]], ...]  # per input: shape, dtype, strides
_FORMAT = 2  # 2: the saved tensors are stored on the CPU, their devices in the .json


@dataclass
class _Loaded:
    run: Callable[..., tuple[Tensor, ...]]  # flat inputs -> flat outputs
    out_spec: Any


class AotCompiledFunction:
    """``AotCompiledFunction(fn, cache_dir, key, live)(*args)`` equals ``fn(*args)`` up to floating-point rounding.

    ``live``: named tensors that ``fn`` reads besides its arguments (a model's parameters and buffers). They are
    the artifact's inputs, read when it is loaded (keep them in place: update them in place, don't replace them).
    ``options``: Inductor config for the compilation (``torch._inductor.config`` keys, e.g. ``max_autotune``);
    they name the artifact too.
    The first call for an input signature loads ``cache_dir/<digest>.bin`` (the compiled artifact) with its
    ``<digest>.constants.pt`` (the other tensors ``fn`` reads) and ``<digest>.json`` (the output structure and
    where each lifted tensor comes from) if an earlier run wrote them, otherwise traces, compiles and writes them
    (each atomically, the ``.json`` last); either way it lists the input signature in ``cache_dir``'s index for
    :func:`prefetch`.
    """

    def __init__(self, fn: Callable[..., Any], cache_dir: str | os.PathLike, key: Any,
                 live: Mapping[str, Tensor] | None = None, *, options: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.cache_dir = Path(cache_dir)
        self.live = dict(live or {})
        self.options = dict(options or {})
        signatures = {name: _signature([t])[0] for name, t in self.live.items()}
        self.key = json.dumps({"key": key, "live": signatures, "options": self.options, "format": _FORMAT},
                              sort_keys=True, default=str)
        self.compiled: dict[tuple[str, Signature, str], _Loaded] = {}  # (input spec, signature, device)
        self._prefetch: threading.Thread | None = None  # loading earlier builds' artifacts (``prefetch``)

    def artifact_path(self, leaves: list[Tensor], spec: Any) -> Path:
        """Where the artifact for these inputs lives (``cache_dir/<digest>.bin``)."""
        return self._path(treespec_dumps(spec), _signature(leaves), leaves[0].device)

    def _path(self, spec: str, signature: Signature, device: torch.device) -> Path:
        text = json.dumps([self.key, spec, signature, torch.__version__, _device_name(device)], default=str)
        return self.cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.bin"

    def index_path(self, device: torch.device) -> Path:
        """The index of the input signatures built for ``device`` (``cache_dir/<digest>.index.json``)."""
        text = json.dumps([self.key, torch.__version__, _device_name(device)])
        return self.cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.index.json"

    def await_prefetch(self) -> None:
        """Wait for :func:`prefetch`'s thread, if one is loading for this function."""
        if self._prefetch is not None:
            self._prefetch.join()
            self._prefetch = None

    def __call__(self, *args: Any) -> Any:
        self.await_prefetch()  # whatever it loads is this call's to use
        leaves, spec = tree_flatten(args)
        spec_text, signature, device = treespec_dumps(spec), _signature(leaves), leaves[0].device
        memo = (spec_text, signature, str(device))
        entry = self.compiled.get(memo)
        if entry is None:
            path = self._path(spec_text, signature, device)
            entry = self.compiled[memo] = (self._load(path, device) if _complete(path)
                                           else self._build(path, leaves, spec))
            self._index(spec_text, signature, device)
        return tree_unflatten(list(entry.run(*leaves)), entry.out_spec)

    def prefetch_indexed(self, device: torch.device) -> None:
        """Load every complete artifact the index lists for ``device`` and not loaded yet (what :func:`prefetch`
        runs on its thread). One that fails to load is left to the call that needs it, which raises the error."""
        for entry in _read_index(self.index_path(device)):
            signature = tuple((tuple(shape), dtype, tuple(stride)) for shape, dtype, stride in entry["signature"])
            memo = (entry["spec"], signature, str(device))
            path = self._path(entry["spec"], signature, device)
            if memo in self.compiled or not _complete(path):
                continue
            try:
                self.compiled[memo] = self._load(path, device)
            except RuntimeError as err:
                log.debug("prefetch: %s", err)

    def _index(self, spec: str, signature: Signature, device: torch.device) -> None:
        """Add an input signature to ``device``'s index (rewritten atomically; a concurrent run may drop it, and the
        next run that loads the artifact adds it again)."""
        path = self.index_path(device)
        entries = _read_index(path)
        entry = {"spec": spec, "signature": json.loads(json.dumps(signature))}
        if entry not in entries:
            _atomic_write(path, lambda tmp: tmp.write_text(json.dumps([*entries, entry])))

    def _build(self, path: Path, leaves: list[Tensor], spec: Any) -> _Loaded:
        out_spec: list[Any] = []

        def flat_fn(*flat: Tensor) -> tuple[Tensor, ...]:
            out_leaves, tree = tree_flatten(self.fn(*tree_unflatten(list(flat), spec)))
            out_spec[:] = [tree]
            return tuple(out_leaves)

        _await_runtime_import()
        start = time.perf_counter()
        traced = make_fx(flat_fn, tracing_mode="real")(*leaves)  # runs fn once, recording forward and backward ops
        constants = _lift_constants(traced)
        sources = self._sources(constants)
        traced_at = time.perf_counter()
        options = {"config_patches": self.options} if self.options else None  # compile_fx's keyword arguments
        artifact = torch._inductor.standalone_compile(traced, [*leaves, *constants], options=options, aot=True,
                                                      dynamic_shapes="from_example_inputs")
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda tmp: artifact.save(path=str(tmp), format="binary"))
        saved = [c for c, source in zip(constants, sources, strict=True) if source is None]
        _atomic_write(_constants_path(path), lambda tmp: torch.save([c.cpu() for c in saved], tmp))
        meta = {"outputs": treespec_dumps(out_spec[0]), "constants": sources,
                "saved_devices": [str(c.device) for c in saved]}
        _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta)))
        log.info("AOT artifact %s: traced %d nodes (%d tensors lifted, %d of them live) in %.1f s, compiled in %.1f s",
                 path.name, len(traced.graph.nodes), len(constants), len(constants) - len(saved),
                 traced_at - start, time.perf_counter() - traced_at)
        return self._load(path, leaves[0].device)

    def _sources(self, constants: list[Tensor]) -> list[str | None]:
        """For each lifted tensor, the name of the ``live`` tensor it is (same memory, shape, strides, dtype), or
        None: a tensor ``fn`` built itself, saved with the artifact."""
        names = {_identity(t): name for name, t in self.live.items()}
        return [names.get(_identity(c)) for c in constants]

    def _load(self, path: Path, device: torch.device) -> _Loaded:
        _await_runtime_import()
        from torch._inductor.standalone_compile import CompiledArtifact

        try:
            start = time.perf_counter()
            artifact = CompiledArtifact.load(path=str(path), format="binary")
            loaded_at = time.perf_counter()
            meta = json.loads(path.with_suffix(".json").read_text())
            saved_list = _to_devices(torch.load(_constants_path(path), map_location="cpu", weights_only=True),
                                     meta["saved_devices"], device)
            log.info("AOT artifact %s loaded in %.2f s, its %d saved tensors in %.2f s", path.name,
                     loaded_at - start, len(saved_list), time.perf_counter() - loaded_at)
            saved = iter(saved_list)
            out_spec = treespec_loads(meta["outputs"])
            constants = [next(saved) if name is None else self.live[name] for name in meta["constants"]]
            if next(saved, None) is not None:
                raise ValueError(f"{_constants_path(path).name} holds more tensors than the .json lists")
        except Exception as err:
            raise RuntimeError(f"{path}: cannot load this compiled artifact, its {_constants_path(path).name} or its "
                               f"{path.with_suffix('.json').name} ({type(err).__name__}: {err}); delete the three "
                               "files to rebuild them") from err
        return _Loaded(lambda *leaves: artifact(*leaves, *constants), out_spec)


def prefetch(functions: Sequence[AotCompiledFunction], device: torch.device) -> None:
    """Load, on one background thread, the artifacts that earlier builds listed in the index for ``functions`` on
    ``device``; each function's next call waits for that thread first. Inductor's runtime is imported first
    (:func:`import_runtime_in_background`, joined by the load)."""
    functions = list(functions)
    thread = threading.Thread(target=_prefetch, args=(functions, device), name="aot-prefetch", daemon=True)
    for fn in functions:
        fn._prefetch = thread
    thread.start()


def _prefetch(functions: list[AotCompiledFunction], device: torch.device) -> None:
    try:
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext():  # this thread's current device
            for fn in functions:
                fn.prefetch_indexed(device)
    except Exception as err:  # e.g. a damaged index: the calls load (or build) what they need and raise there
        log.warning("AOT prefetch stopped: %s", err)


def _to_devices(saved: list[Tensor], devices: list[str], device: torch.device) -> list[Tensor]:
    """The saved tensors (loaded on the CPU) on the devices they were built on, ``cuda`` ones on ``device``.

    The copies run on a stream of their own and wait for nothing else: a copy on the current stream (what
    ``torch.load`` to CUDA does) waits for the work queued there, which while loading on a thread is the caller's
    first clean passes."""
    if len(devices) != len(saved):
        raise ValueError(f"{len(saved)} saved tensors, the .json lists {len(devices)} devices")
    if not any(d.startswith("cuda") for d in devices):
        return saved
    with torch.cuda.stream(torch.cuda.Stream(device)):  # synchronous copies, waiting for this stream only
        return [t.to(device) if d.startswith("cuda") else t for t, d in zip(saved, devices, strict=True)]


def _read_index(path: Path) -> list[dict[str, Any]]:
    """The entries of an index file ([] if there is none); a damaged one is named in the error."""
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list) or not all(isinstance(e, dict) and {"spec", "signature"} <= e.keys()
                                                    for e in entries):
            raise ValueError("expected a list of {spec, signature} entries")
    except ValueError as err:
        raise ValueError(f"{path}: not an artifact index ({err}); delete it (a run indexes the artifacts it loads "
                         "or builds)") from err
    return entries


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _lift_constants(traced: fx.GraphModule) -> list[Tensor]:
    """Turn every tensor the traced graph reads as an attribute into a trailing input, in place; returns them.

    A loaded standalone artifact takes all its tensors as inputs (Inductor lifts a graph's attributes only while
    compiling): the caller's live tensors at each call, the others from ``<digest>.constants.pt``.
    """
    graph = traced.graph
    last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
    lifted: dict[str, fx.Node] = {}
    constants: list[Tensor] = []
    for node in list(graph.nodes):
        if node.op != "get_attr" or not isinstance(getattr(traced, node.target, None), Tensor):
            continue
        if node.target not in lifted:
            with graph.inserting_after(last_input):
                last_input = lifted[node.target] = graph.placeholder(f"constant_{len(constants)}")
            last_input.meta.update(node.meta)  # its fake value: Inductor's cpp_wrapper reads inputs from it
            constants.append(getattr(traced, node.target).detach())
        node.replace_all_uses_with(lifted[node.target])
        graph.erase_node(node)
    for target in lifted:
        delattr(traced, target)
    graph.lint()
    traced.recompile()
    return constants


def _identity(t: Tensor) -> tuple[Any, ...]:
    return t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


def _signature(leaves: list[Tensor]) -> Signature:
    return tuple((tuple(t.shape), str(t.dtype), t.stride()) for t in leaves)


def _constants_path(path: Path) -> Path:
    return path.with_suffix(".constants.pt")


def _complete(path: Path) -> bool:
    return all(p.is_file() for p in (path, _constants_path(path), path.with_suffix(".json")))


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it to ``path`` (no half-written file)."""
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
