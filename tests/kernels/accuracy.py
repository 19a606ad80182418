"""The Cut Cross-Entropy accuracy rule: a kernel's error against float64 must be no worse than
the same-dtype torch error, plus a small tolerance relative to the reference's scale."""
import torch

REL_TOL = 1e-5


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double().cpu() - ref.double().cpu()).abs().max().item() if ref.numel() else 0.0


def assert_cce(name: str, got: torch.Tensor, same_dtype_torch: torch.Tensor, ref64: torch.Tensor) -> None:
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    scale = max(ref64.abs().max().item() if ref64.numel() else 0.0, 1e-6)
    err, base = max_err(got, ref64), max_err(same_dtype_torch, ref64)
    assert err <= base + REL_TOL * scale, f"{name}: error {err:.3g} vs torch {base:.3g} (scale {scale:.3g})"
