"""The colocated vLLM rollout engine: generation inside the training process, weights pushed in.

The engine runs in the calling process (no server, no engine subprocess), so trained tensors can
be handed to it directly. Under torchrun the training world is created first and each rank
builds its own engine on top of it (vLLM's "external_launcher" executor reuses the existing
torch.distributed world instead of starting one). The returned log-probs are those of the
distribution actually sampled from (vLLM's "processed" log-probs: after temperature, masking and
top-k/top-p), the quantity a GRPO importance ratio compares with the trainer's.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import torch

from dprl.config import RolloutConfig
from dprl.models.chat import prompt_text
from dprl.rollout.base import VISION_TOKENS, Completion, RolloutEngine, RolloutRequest, seeded

__all__ = ["VLLMEngine", "VISION_TOKENS", "Completion"]


class _DropThreadBindingNotice(logging.Filter):
    """In-process on CPU, vLLM replaces torch.set_num_threads with a function that logs a warning,
    and its own multimodal preprocessing then calls it for every request: a GRPO run printed
    over a thousand identical lines. The thread count is as vLLM wants either way."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torch.set_num_threads` after the thread binding" not in record.getMessage()


_THREAD_BINDING_NOTICE = _DropThreadBindingNotice()


def _prepare_process(cfg: RolloutConfig) -> None:
    """Process-wide settings vLLM needs; must run before vLLM is imported."""
    # Keep the engine in this process, so weights can be pushed into it directly (with engine
    # multiprocessing on, tensors cannot be passed through collective_rpc).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not torch.cuda.is_available():
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gib)
        if hasattr(torch._C, "_cpu"):
            # vLLM's CPU attention uses AMX tiles; Linux kills a process that never asked for
            # AMX permission with SIGILL (exit 132) on some batches.
            torch._C._cpu._init_amx()
        logging.getLogger("vllm.v1.worker.cpu_worker").addFilter(_THREAD_BINDING_NOTICE)


class VLLMEngine(RolloutEngine):
    """One in-process `vllm.LLM` for a local checkpoint, behind the RolloutEngine contract."""

    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str = "float32"):
        _prepare_process(cfg)
        from vllm import LLM

        from dprl.models.loading import load_processor

        self.cfg = cfg
        self.on_gpu = torch.cuda.is_available()
        extra = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Colocated with a training world: join it rather than create a second one (vLLM
            # creating the world under torchrun fails on rank 1).
            extra["distributed_executor_backend"] = "external_launcher"
        if self.on_gpu:
            extra["gpu_memory_utilization"] = cfg.gpu_memory_utilization
            extra["enable_sleep_mode"] = cfg.sleep_mode
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=cfg.seed,  # engine-level seed: per-request seeds crash chunked CPU prefill
            max_model_len=cfg.max_model_len,
            logprobs_mode="processed_logprobs",
            limit_mm_per_prompt={"image": 4, "video": 0},
            enforce_eager=cfg.enforce_eager,
            disable_log_stats=True,
            tensor_parallel_size=1,
            **extra,
        )
        self.processor = load_processor(model_path)
        self.tokenizer = self.llm.get_tokenizer()
        vocab = self.tokenizer.get_vocab()
        self.banned_token_ids = sorted(vocab[t] for t in VISION_TOKENS if t in vocab)
        banned = set(self.banned_token_ids)
        self.allowed_token_ids = [i for i in range(len(self.tokenizer)) if i not in banned]
        self.weights_version = 0
        self._calls = 0
        self._asleep = False
        self._weights_dropped = False

    # -- generation ------------------------------------------------------------------------------
    def sampling_params(self, max_tokens: int | None = None):
        from vllm import SamplingParams

        c = self.cfg
        return SamplingParams(
            n=c.n,
            temperature=c.temperature,  # 0: greedy (evaluation; needs logprobs off)
            top_p=c.top_p,
            top_k=c.top_k,
            max_tokens=max_tokens or c.max_tokens,
            stop=list(c.stop) or None,
            logprobs=0 if c.logprobs else None,  # only the sampled token's log-prob
            allowed_token_ids=self.allowed_token_ids,
            # vLLM detokenizes every new token of every sequence, and decodes each sampled token
            # again for its log-prob entry, in Python on the step's critical path: on the main
            # job's checkpoint (8 prompts x 8 completions) that was 16% of a rollout's profile.
            # The text is decoded once at the end instead (_texts); stop strings need vLLM's
            # incremental text, so they keep it on.
            detokenize=bool(c.stop),
            flat_logprobs=True,  # a few flat lists per sequence, not a dict per token
        )

    def _vllm_prompt(self, request: RolloutRequest) -> dict:
        prompt = {"prompt": prompt_text(self.processor, request.messages)}
        if request.images:
            prompt["multi_modal_data"] = {"image": list(request.images)}
        return prompt

    def _check_ready(self) -> None:
        if self._asleep:
            raise RuntimeError("VLLMEngine: generate/logprobs_of while asleep; call wake_up() first")
        if self._weights_dropped:
            raise RuntimeError("VLLMEngine: the weights were dropped by sleep(level=2); sync all "
                               "weights (update_weights with final=True) before generating")

    def generate(self, requests: Sequence[RolloutRequest], seed: int | None = None,
                 max_tokens: int | None = None) -> list[Completion]:
        self._check_ready()
        # vLLM's CPU and GPU samplers draw their noise from the global torch RNG when requests
        # carry no seed of their own, so seeding it around the call makes a batch reproducible.
        seed = self.cfg.seed + self._calls if seed is None else seed
        self._calls += 1
        prompts = [self._vllm_prompt(r) for r in requests]
        with seeded(seed):
            outputs = self.llm.generate(prompts, self.sampling_params(max_tokens), use_tqdm=False)
        texts = self._texts(outputs)
        result = []
        for i, out in enumerate(outputs):
            for seq in out.outputs:
                lps = _sampled_logprobs(seq) if self.cfg.logprobs else []
                result.append(Completion(i, list(seq.token_ids), next(texts), lps, seq.finish_reason,
                                         len(out.prompt_token_ids), self.weights_version))
        return result

    def _texts(self, outputs):
        """Each completion's text in output order: vLLM's own when it detokenized, else one
        batched decode with vLLM's defaults (special tokens skipped), which gives the same text."""
        seqs = [seq for out in outputs for seq in out.outputs]
        if self.cfg.stop:
            return iter([seq.text for seq in seqs])
        return iter(self.tokenizer.batch_decode([list(seq.token_ids) for seq in seqs], skip_special_tokens=True))

    @torch.no_grad()
    def logprobs_of(self, request: RolloutRequest, completion_ids: Sequence[int]) -> torch.Tensor:
        from vllm import SamplingParams

        self._check_ready()
        # The tokenizer's ids (one <|image_pad|> per image): the engine expands them itself.
        text = prompt_text(self.processor, request.messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt = {"prompt_token_ids": list(ids) + list(completion_ids)}
        if request.images:
            prompt["multi_modal_data"] = {"image": list(request.images)}
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        with seeded(0):
            (out,) = self.llm.generate([prompt], params, use_tqdm=False)
        tail = out.prompt_logprobs[-len(completion_ids):]
        return torch.tensor([step[tok].logprob for step, tok in zip(tail, completion_ids)],
                            dtype=torch.float32)  # (T,)

    # -- weights and memory ----------------------------------------------------------------------
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], final: bool = True) -> None:
        if self._asleep:
            raise RuntimeError("VLLMEngine: update_weights while asleep; call wake_up() first")
        weights = list(named_tensors)
        if weights:
            # vLLM's in-place reload maps HF checkpoint names itself and fuses q/k/v and gate/up;
            # calling the model's load_weights directly fails on CPU (linear weights are repacked).
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights,
                                                               "is_checkpoint_format": True})
        if final:
            self.reset_caches()
            self.weights_version += 1
            self._weights_dropped = False

    def reset_caches(self) -> None:
        self.llm.reset_prefix_cache()
        # The engine-side encoder cache keeps image embeddings by content hash; without this
        # reset the next multimodal request fails with "Encoder cache miss" after a reload.
        self.llm.llm_engine.reset_encoder_cache()

    def sleep(self, level: int = 1) -> None:
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 (free KV cache) or 2 (also weights), got {level}")
        if self.on_gpu and self.cfg.sleep_mode:
            self.llm.sleep(level=level)
            self._weights_dropped = self._weights_dropped or level == 2
        # vLLM's CPU backend rejects sleep mode: nothing is freed there, and nothing is lost.
        self._asleep = True

    def wake_up(self) -> None:
        if self._asleep and self.on_gpu and self.cfg.sleep_mode:
            self.llm.wake_up()
        self._asleep = False


def _sampled_logprobs(seq) -> list[float]:
    """The sampled token's log-prob at each position of a vLLM completion (logprobs=0: one entry
    per position, the sampled token first), from flat or per-position containers."""
    lp = seq.logprobs
    flat = getattr(lp, "start_indices", None)
    if flat is None:
        return [step[tok].logprob for step, tok in zip(lp, seq.token_ids)]
    if [lp.token_ids[i] for i in flat] != list(seq.token_ids):
        raise RuntimeError("vLLM's log-probs do not start with the sampled tokens")
    return [lp.logprobs[i] for i in flat]

