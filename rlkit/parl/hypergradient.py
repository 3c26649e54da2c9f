"""Implicit-differentiation hypergradient of a bilevel problem.

The problem is max_nu G(nu, theta*(nu)), theta*(nu) = argmax_theta V(nu, theta).

At a maximiser theta* of V(nu, .), the implicit function theorem gives
d theta*/d nu = -[grad^2_theta V]^-1 grad^2_theta,nu V, hence

    dG/dnu = grad_nu G + grad^2_nu,theta V . v,    v = (-grad^2_theta V)^-1 grad_theta G,

where the second term is computed as grad_nu <grad_theta V, stopgrad(v)> by automatic
differentiation, and v by conjugate gradient on Hessian-vector products of the damped system
(-grad^2_theta V + lambda I) v = grad_theta G. A fixed lambda means nothing without the scale of
V: lambda = 1 against a Hessian of norm 0.1 turns the solve into a rescaled gradient. With
``relative_damping`` lambda is a multiple of a power-iteration estimate of max |eig(H)|.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch as th


class Hypergradient(NamedTuple):
    """The two terms of dG/dnu (ascent directions, one tensor per nu parameter) and the solve's diagnostics."""

    #: grad_nu G at fixed theta (the first-order, PEBBLE-style term)
    direct: list[th.Tensor]
    #: grad^2_nu,theta V . v: how the maximiser theta*(nu) moves with nu, carried onto G
    correction: list[th.Tensor]
    #: ||(-H + lambda I) v - grad_theta G|| / ||grad_theta G|| after the solve
    residual: float
    #: the damping lambda used
    damping: float
    #: the power-iteration estimate of max |eigenvalue| of H = grad^2_theta V (nan when not estimated)
    curvature_scale: float


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


def spectral_radius(matvec: Callable[[list[th.Tensor]], list[th.Tensor]], start: list[th.Tensor], n_iters: int) -> float:
    """Power-iteration estimate of max |eigenvalue| of a symmetric A given by ``matvec``, from ``start``.

    Each iteration is one product A x; the estimate is the norm ratio ||A x|| / ||x|| of the last one,
    a lower bound of the spectral radius that approaches it as the iterations grow.

    :param matvec: x -> A x
    :param start: the first vector (not all zeros)
    :param n_iters: products A x (at least 1)
    :return: the estimate
    """
    if n_iters < 1:
        raise ValueError(f"spectral_radius needs n_iters >= 1, got {n_iters}")
    x = [t.detach().clone() for t in start]
    estimate = 0.0
    for _ in range(n_iters):
        norm = float(_dot(x, x).sqrt())
        if norm == 0.0:
            return 0.0
        x = [t / norm for t in x]
        ax = matvec(x)
        estimate = float(_dot(ax, ax).sqrt())
        x = [t.detach() for t in ax]
    return estimate


def hypergradient(
    upper: th.Tensor,
    lower: th.Tensor,
    theta: Sequence[th.Tensor],
    nu: Sequence[th.Tensor],
    damping: float = 0.0,
    cg_iters: int = 10,
    relative_damping: bool = False,
    power_iters: int = 5,
) -> Hypergradient:
    """Both terms of the hypergradient of G(nu, theta*(nu)) at (nu, theta), theta taken as the lower maximiser.

    The Hessian and the mixed derivative are both taken from ``lower``: one objective V(nu, theta)
    for every second-order term, as the implicit function theorem requires.

    :param upper: G(nu, theta), differentiable in both
    :param lower: V(nu, theta), differentiable in both (its mixed derivative gives the correction,
        its Hessian in theta the system's matrix)
    :param theta: the lower-level parameters
    :param nu: the upper-level parameters
    :param damping: lambda of the damped system (-H + lambda I) v = grad_theta G; with
        ``relative_damping`` a multiple of the curvature's scale instead
    :param cg_iters: conjugate-gradient iterations
    :param relative_damping: lambda = ``damping`` times the power-iteration estimate of max |eig(H)|,
        so that the damping keeps its meaning whatever the scale of V
    :param power_iters: Hessian-vector products of that estimate (used only with ``relative_damping``)
    :return: the direct term, the correction and the solve's diagnostics
    """
    direct = _grads(upper, nu)
    upper_theta = [g.detach() for g in _grads(upper, theta)]
    lower_grad = _grads(lower, theta, create_graph=True)

    def hessian(vector: list[th.Tensor]) -> list[th.Tensor]:
        return [h.detach() for h in _grads(_dot(lower_grad, vector), theta)]

    scale = spectral_radius(hessian, upper_theta, power_iters) if relative_damping else float("nan")
    lam = damping * scale if relative_damping else damping

    def damped_neg_hessian(vector: list[th.Tensor]) -> list[th.Tensor]:
        return [lam * v - h for v, h in zip(vector, hessian(vector), strict=True)]

    v = conjugate_gradient(damped_neg_hessian, upper_theta, cg_iters)
    correction = _grads(_dot(lower_grad, [vi.detach() for vi in v]), nu)
    residual_vec = [a - b for a, b in zip(damped_neg_hessian(v), upper_theta, strict=True)]
    norm_b = float(_dot(upper_theta, upper_theta).sqrt())
    residual = float(_dot(residual_vec, residual_vec).sqrt()) / max(norm_b, 1e-30)
    return Hypergradient([d.detach() for d in direct], [c.detach() for c in correction], residual, lam, scale)
