"""Runs in stages (`qkv pipeline`): the chat pipeline — tokenizer -> base -> SFT -> RL -> report.

    from qkv.pipeline import load_pipeline_config, run_pipeline
    state = run_pipeline(load_pipeline_config("configs/chat-pipeline.toml"))
"""

from qkv.pipeline.stages import PipelineConfig, load_pipeline_config, run_pipeline

__all__ = ["PipelineConfig", "load_pipeline_config", "run_pipeline"]
