"""Configuration: dataclasses are the single source of truth, YAML and `key=value` fill them.

`dprl.config.loader` loads and checks any of them (and imports nothing else of dprl); each
component's sections live in their own module. Every name is re-exported here, so
`from dprl.config import GRPOConfig, load_config` is the way in.
"""
from dprl.config.data_engine import (
    CompositionConfig,
    DataEngineConfig,
    DifficultyConfig,
    EngineDataConfig,
    EngineSourceConfig,
    KnowledgeFilterConfig,
    LayoutWeightsConfig,
    TeacherConfig,
)
from dprl.config.eval import CheckpointConfig, EvalConfig, EvalDataConfig, KnowledgeProbeConfig
from dprl.config.loader import ConfigError, load_config, parse_override, require, save_config, to_dict
from dprl.config.model import VLLM_CPU_HEAD_SIZES, ModelConfig, TinyModelConfig
from dprl.config.pipeline import PipelineConfig, SmokeConfig
from dprl.config.rewards import ParseOptions, RewardConfig, RewardTermConfig
from dprl.config.rollout import RolloutConfig
from dprl.config.train import (
    GRPOAlgoConfig,
    GRPOConfig,
    GRPODataConfig,
    LogConfig,
    SFTConfig,
    SFTDataConfig,
    TrainerConfig,
    WeightSyncConfig,
)
from dprl.config.world import ALL_DOMAINS, SEEN_DOMAINS, UNSEEN_DOMAINS, WorldConfig

__all__ = [
    "ALL_DOMAINS", "SEEN_DOMAINS", "UNSEEN_DOMAINS", "VLLM_CPU_HEAD_SIZES",
    "CheckpointConfig", "CompositionConfig", "ConfigError", "DataEngineConfig", "DifficultyConfig",
    "EngineDataConfig", "EngineSourceConfig", "EvalConfig", "EvalDataConfig",
    "GRPOAlgoConfig", "GRPOConfig", "GRPODataConfig", "KnowledgeFilterConfig", "KnowledgeProbeConfig",
    "LayoutWeightsConfig", "LogConfig", "ModelConfig", "ParseOptions", "PipelineConfig", "RewardConfig",
    "RewardTermConfig", "RolloutConfig", "TeacherConfig",
    "SFTConfig", "SFTDataConfig", "SmokeConfig", "TinyModelConfig", "TrainerConfig",
    "WeightSyncConfig", "WorldConfig",
    "load_config", "parse_override", "require", "save_config", "to_dict",
]
