"""Charts drawn as inline SVG on the server: no scripts, readable without colour.

The grade scale shows where a score sits among the policy's grade bands:
one band per grade from its minimum to the next grade's, the subject's
score marked with a line and its value.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from chengxin.domain.policy import Policy

WIDTH = 760
HEIGHT = 96
_PAD = 20
_FILLS = ("#e7efe9", "#dbe7f3", "#f1ecdf", "#f3e1df")


def _position(value: int, bounds: list[tuple[int, int]]) -> float:
    """Where ``value`` falls on bands of equal width, as a fraction of the whole scale."""
    n = len(bounds)
    for i, (start, end) in enumerate(bounds):
        if value < end or i == n - 1:
            inside = (min(max(value, start), end) - start) / max(1, end - start)
            return (i + inside) / n
    return 1.0  # pragma: no cover - the loop returns on its last band


def grade_scale(policy: Policy, score: int) -> Markup:
    """An SVG of the policy's grade bands with ``score`` marked on them.

    Every grade gets a band of the same width, whatever its span in points,
    so that narrow grades stay readable; the score sits within its band in
    proportion to its points.
    """
    lo, hi = policy.scale.min, policy.scale.max
    grades = sorted(policy.grades, key=lambda g: g.min)
    bounds = [
        (max(g.min, lo), grades[i + 1].min if i + 1 < len(grades) else hi)
        for i, g in enumerate(grades)
    ]
    inner = WIDTH - 2 * _PAD
    step = inner / len(grades)
    parts = [
        f'<svg role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'aria-label="score {score}, grade bands from {lo} to {hi}">',
        f"<title>Score {score} among the grades of {escape(policy.label)}</title>",
    ]
    for i, (grade, (start, _)) in enumerate(zip(grades, bounds, strict=True)):
        x0 = _PAD + i * step
        fill = _FILLS[i % len(_FILLS)]
        parts.append(
            f'<rect x="{x0:.1f}" y="30" width="{step:.1f}" height="34" fill="{fill}" '
            f'stroke="#8a94a6" stroke-width="0.5"/>'
        )
        parts.append(
            f'<text x="{x0 + step / 2:.1f}" y="52" text-anchor="middle" fill="#1d2430">'
            f"{escape(grade.grade)}</text>"
        )
        parts.append(
            f'<text x="{x0:.1f}" y="80" text-anchor="middle" fill="#5a6475">{start}</text>'
        )
    parts.append(
        f'<text x="{_PAD + inner:.1f}" y="80" text-anchor="middle" fill="#5a6475">{hi}</text>'
    )
    xs = _PAD + inner * _position(score, bounds)
    parts.append(
        f'<line x1="{xs:.1f}" y1="18" x2="{xs:.1f}" y2="70" stroke="#b3261e" stroke-width="3"/>'
    )
    parts.append(
        f'<text x="{xs:.1f}" y="13" text-anchor="middle" fill="#b3261e" '
        f'font-weight="700">{score}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
