"""How a loss's logits are computed: ``chunked`` (exact, memory-linear, any device) and ``fused`` (Triton).

Both are custom autograd functions behind ``row_logsumexp`` and ``pairwise_sigmoid_sum`` in
:mod:`workbench.losses.kernels.chunked`; the losses pick one with ``implementation=``.
"""
