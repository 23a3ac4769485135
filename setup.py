"""Selective state space models (Mamba): Triton kernels, a Mamba text encoder, CLIP training.

Install on a CPU machine (CI, laptops): see the README's install lines. On a GPU machine
keep the CUDA build of torch you have; the range below accepts it.
"""
from setuptools import find_packages, setup

setup(
    name="ssm-research",
    version="0.1.0",
    description="Triton selective-scan kernels and Mamba text encoders for image-text training",
    packages=find_packages(include=["kernels", "kernels.*", "ssm", "ssm.*"]),
    package_data={"kernels.selective_scan": ["*.cpp"], "kernels.causal_conv1d": ["*.cpp"],
                  "kernels.common": ["*.h"]},
    python_requires=">=3.10",
    install_requires=[
        # A range, not a pin: a CPU machine installs torch==2.13.0 (CPU build) first, a GPU
        # machine keeps its CUDA build. Left alone, pip would fetch a multi-GB CUDA build.
        "torch>=2.4,<2.15",
        "triton>=3.2; platform_system == 'Linux'",
        "einops>=0.7",
        "numpy>=1.24",
        "hydra-core>=1.3.2,<1.4",
        "pillow>=10.0",
        "webdataset>=0.2.86",
        "wandb>=0.19",
        "tqdm>=4.60",
        # Model exports (ssm.models.export) and Hugging Face Mamba checkpoints.
        "safetensors>=0.4",
        # Reports and benchmarks write PNG plots (Agg backend, no display needed).
        "matplotlib>=3.7",
        # torch.utils.cpp_extension builds the fast CPU scan with ninja, once, on first use.
        "ninja",
        # Caption metrics: BLEU-4 and CIDEr-D from the COCO caption scorers (pure Python
        # for these two; we tokenise ourselves, so no Java).
        "pycocoevalcap>=1.2",
    ],
    extras_require={
        # transformers: mamba-ssm's modules import it, and the tests use mamba-ssm as oracle.
        # The Hydra plugins: the sweep presets' tests run them (same pins as "sweeps").
        "dev": ["pytest>=8", "hypothesis>=6", "transformers>=4.40", "packaging",
                "hydra-optuna-sweeper>=1.3", "hydra-submitit-launcher>=1.2",
                "hydra-joblib-launcher>=1.2"],
        # mamba-ssm with its CUDA kernels, for a GPU machine (a long compile). On CPU install
        # it the lean way instead (README): --no-deps, no CUDA build, no build isolation.
        "peer": ["mamba-ssm==2.3.2.post1"],
        # tokenizer=hf: a Hugging Face tokenizer from a local directory (pretrained towers).
        "hf": ["transformers>=4.40"],
        # Optuna sweeper 1.3: max_failure_rate (conf/hparams_search); it brings optuna 2.x.
        "sweeps": ["hydra-optuna-sweeper>=1.3", "hydra-submitit-launcher>=1.2",
                   "hydra-joblib-launcher>=1.2"],
    },
)
