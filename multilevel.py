"""
Multilevel training: alternate steps on coarse-depth networks that share the fine model's parameters.

Level j of an L-layer model is GPT.forward(level=j, offset=o): layers o, o + 2^j, ... with every oracle output
times the step factor 2^j (the same ODE with half as many, twice as long steps per level). The schedule is a
pure function of the iteration number, so resuming in the middle of a cycle continues it exactly:

- multilevel_levels = m (1: off), multilevel_cycle = [n_0, ..., n_{m-1}]: steps at level 0 (fine) ... m-1.
- mode "cycle": cycle c runs level m-1 for n_{m-1} steps, then level m-2, ..., then level 0 for n_0 steps
  (coarse to fine: every cycle ends on the fine model); level j uses offset c mod 2^j (j = 1: even layers in
  even cycles, odd layers in odd cycles).
- mode "cascade": level m-1 for n_{m-1} steps, ..., level 1 for n_1 steps, then level 0 to the end (n_0 is
  not used); step s of level j's phase uses offset s mod 2^j, so every layer trains.
- multilevel_until = U > 0: iterations U, U+1, ... train the fine model only (0: no limit).
"""

from model import layer_ids

MODES = ("cycle", "cascade")


def enabled(cfg):
    return cfg.multilevel_levels > 1


def problems(cfg, n_layer=None):
    """What is wrong with the schedule (and, given n_layer, with the depth for it): one message per problem."""
    m, n = cfg.multilevel_levels, list(cfg.multilevel_cycle)
    out = []
    if m < 1:
        out.append(f"multilevel_levels={m} must be >= 1 (1 turns multilevel training off)")
    if cfg.multilevel_mode not in MODES:
        out.append(f"multilevel_mode={cfg.multilevel_mode!r}: choose one of {', '.join(MODES)}")
    if cfg.multilevel_until < 0:
        out.append(f"multilevel_until={cfg.multilevel_until} must be >= 0 (0: no limit)")
    if m <= 1:
        return out
    if len(n) != m or any(k < 1 for k in n):
        out.append(f"multilevel_cycle={n} must list {m} positive step counts [fine, ..., coarsest] "
                   f"for multilevel_levels={m}")
    if n_layer is not None:
        try:
            layer_ids(n_layer, m - 1)
        except ValueError:
            out.append(f"multilevel_levels={m} needs n_layer divisible by {2 ** (m - 1)}, got n_layer={n_layer}: "
                       "use fewer levels or another depth")
    return out


def level_at(it, cfg):
    """(level, offset) that training iteration it (0-based) uses."""
    m, n = cfg.multilevel_levels, cfg.multilevel_cycle
    if m == 1 or 0 < cfg.multilevel_until <= it:
        return 0, 0
    if cfg.multilevel_mode == "cascade":
        for j in range(m - 1, 0, -1):
            if it < n[j]:
                return j, it % 2**j
            it -= n[j]
        return 0, 0
    c, r = divmod(it, sum(n))
    for j in range(m - 1, -1, -1):
        if r < n[j]:
            return j, c % 2**j
        r -= n[j]


def switched(it, cfg):
    """Whether iteration it runs another level than iteration it - 1."""
    return it > 0 and level_at(it, cfg)[0] != level_at(it - 1, cfg)[0]


def reset_momentum(optimizers):
    """Zero the first moments: AdamW's exp_avg, Muon's momentum_buffer. AdamW's exp_avg_sq (a scale estimate,
    whose bias correction assumes it was never reset) and step counts are kept."""
    for opt in optimizers:
        for state in opt.state.values():
            for key in ("exp_avg", "momentum_buffer"):
                if key in state:
                    state[key].zero_()


def recompile_limit(m):
    """torch.compile graphs needed: one per (level, offset) in training, 2^m - 1, plus eval; with some slack."""
    return 2**m + 8
