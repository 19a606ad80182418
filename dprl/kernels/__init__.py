"""Token log-prob kernels. On CPU these are chunked torch; the Triton kernels join them here."""
from dprl.kernels.logprob import selective_logprob, selective_logprob_reference

__all__ = ["selective_logprob", "selective_logprob_reference"]
