"""Implicit-differentiation hypergradient of a bilevel problem.

The problem is max_nu G(nu, theta*(nu)), theta*(nu) = argmax_theta V(nu, theta).

At a maximiser theta* of V(nu, .), the implicit function theorem gives
d theta*/d nu = -[grad^2_theta V]^-1 grad^2_theta,nu V, hence

    dG/dnu = grad_nu G + grad^2_nu,theta V . v,    v = (-grad^2_theta V)^-1 grad_theta G,

where the second term is computed as grad_nu <grad_theta V, stopgrad(v)> by automatic
differentiation, and v by conjugate gradient on Hessian-vector products of the damped system
(-grad^2_theta V + lambda I) v = grad_theta G.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch as th


class Hypergradient(NamedTuple):
    """The two terms of dG/dnu (ascent directions, one tensor per nu parameter)."""

    #: grad_nu G at fixed theta (the first-order, PEBBLE-style term)
    direct: list[th.Tensor]
    #: grad^2_nu,theta V . v: how the maximiser theta*(nu) moves with nu, carried onto G
    correction: list[th.Tensor]
    #: ||(-H + lambda I) v - grad_theta G|| / ||grad_theta G|| after the solve
    residual: float


def _dot(xs: Sequence[th.Tensor], ys: Sequence[th.Tensor]) -> th.Tensor:
    return sum((x * y).sum() for x, y in zip(xs, ys, strict=True))  # type: ignore[return-value]


def _grads(output: th.Tensor, params: Sequence[th.Tensor], create_graph: bool = False) -> list[th.Tensor]:
    grads = th.autograd.grad(output, params, retain_graph=True, create_graph=create_graph, allow_unused=True)
    return [th.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def conjugate_gradient(
    matvec: Callable[[list[th.Tensor]], list[th.Tensor]], b: list[th.Tensor], n_iters: int, tol: float = 1e-10
) -> list[th.Tensor]:
    """Solve A x = b for a symmetric A given by ``matvec``; stops early on convergence or non-positive curvature.

    :param matvec: x -> A x
    :param b: right-hand side, one tensor per parameter
    :param n_iters: maximum iterations
    :param tol: stop when ||r||^2 < tol * ||b||^2
    :return: x
    """
    x = [th.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = _dot(r, r)
    threshold = tol * rr
    for _ in range(n_iters):
        if rr <= threshold:
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if curvature <= 0:  # A is not positive definite along p: keep the solution so far
            break
        alpha = rr / curvature
        x = [xi + alpha * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - alpha * api for ri, api in zip(r, ap, strict=True)]
        rr_new = _dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
    return x


def hypergradient(
    upper: th.Tensor,
    lower: th.Tensor,
    theta: Sequence[th.Tensor],
    nu: Sequence[th.Tensor],
    damping: float = 0.0,
    cg_iters: int = 10,
    curvature: th.Tensor | None = None,
) -> Hypergradient:
    """Both terms of the hypergradient of G(nu, theta*(nu)) at (nu, theta), theta taken as the lower maximiser.

    :param upper: G(nu, theta), differentiable in both
    :param lower: V(nu, theta), differentiable in both (its mixed derivative gives the correction)
    :param theta: the lower-level parameters
    :param nu: the upper-level parameters
    :param damping: lambda of the damped system (-H + lambda I) v = grad_theta G
    :param cg_iters: conjugate-gradient iterations
    :param curvature: a scalar whose Hessian in theta replaces V's (``None``: V's own)
    :return: the direct term, the correction and the solver's relative residual
    """
    direct = _grads(upper, nu)
    upper_theta = [g.detach() for g in _grads(upper, theta)]
    curvature_grad = _grads(lower if curvature is None else curvature, theta, create_graph=True)

    def damped_neg_hessian(vector: list[th.Tensor]) -> list[th.Tensor]:
        hvp = _grads(_dot(curvature_grad, vector), theta)
        return [damping * v - h.detach() for v, h in zip(vector, hvp, strict=True)]

    v = conjugate_gradient(damped_neg_hessian, upper_theta, cg_iters)
    lower_grad = curvature_grad if curvature is None else _grads(lower, theta, create_graph=True)
    correction = _grads(_dot(lower_grad, [vi.detach() for vi in v]), nu)
    residual_vec = [a - b for a, b in zip(damped_neg_hessian(v), upper_theta, strict=True)]
    norm_b = float(_dot(upper_theta, upper_theta).sqrt())
    residual = float(_dot(residual_vec, residual_vec).sqrt()) / max(norm_b, 1e-30)
    return Hypergradient([d.detach() for d in direct], [c.detach() for c in correction], residual)
