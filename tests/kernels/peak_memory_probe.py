"""Run as a script in a fresh process: peak resident memory of one fwd+bwd, beyond its inputs
and the gradients it must return. Prints one JSON line of {case: extra_bytes}.

Peak RSS comes from the kernel's high-water mark (VmHWM), reset before each case by writing 5 to
/proc/self/clear_refs. glibc is told (by the caller's environment) to mmap every block over 64 KB,
so freed temporaries leave RSS at once and never hide inside a reused heap.
"""
import json
import sys

import torch


def main() -> None:
    from dprl.kernels import _common, linear_logprob, selective_logprob
    from benchmarks.harness import rss_peak_extra  # the repository root is on PYTHONPATH
    cfg = json.loads(sys.argv[1])
    _common.CPU_CHUNK_ELEMS = cfg["chunk_elems"]
    n, h = cfg["n"], cfg["h"]
    torch.manual_seed(0)
    out = {}
    for i, v in enumerate([512] + cfg["vocab"]):  # the first size warms up lazy initialisation
        targets = torch.randint(0, v, (n,))  # (N,)
        grad = torch.randn(n)  # (N,)
        logits = torch.randn(n, v).requires_grad_()  # (N, V)
        hidden = torch.randn(n, h).requires_grad_()  # (N, H)
        weight = (torch.randn(v, h) / h ** 0.5).requires_grad_()  # (V, H)

        # autograd.grad hands the gradients back without accumulating them into .grad.
        def chunked():
            # In-place backward: the logits buffer becomes the gradient, so nothing N x V is new.
            logp = selective_logprob(logits, targets, 0.9, inplace_backward=True)
            torch.autograd.grad(logp, logits, grad)

        def naive():
            logp = torch.log_softmax(logits / 0.9, -1).gather(1, targets[:, None]).squeeze(1)
            torch.autograd.grad(logp, logits, grad)

        def linear():
            torch.autograd.grad(linear_logprob(hidden, weight, targets, 0.9), (hidden, weight), grad)

        # Gradients an op has to hand back are not overhead: d logits (N x V) for eager torch,
        # d hidden and d weight for the linear op.
        sizes = {"selective": rss_peak_extra(chunked), "naive": rss_peak_extra(naive) - 4 * n * v,
                 "linear": rss_peak_extra(linear) - 4 * (n * h + v * h)}
        if i:
            out.update({f"{k}_{v}": b for k, b in sizes.items()})
        del logits, hidden, weight
    print(json.dumps(out))


if __name__ == "__main__":
    main()
