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
- multilevel_momentum: the optimizer state at a level switch is kept (shared moments), reset (a fresh state, step
  counts too) or kept per level (LevelStates). multilevel_correction = tau > 0: coarse phases minimise
  f_H - <v, .> with MG/OPT's first-order coherence term v (Coherence).

The trainer sees all of this through one Multilevel object (before_step, before_backward, on_grads, state_dict).
"""

from collections import defaultdict

from model import layer_ids

MODES = ("cycle", "cascade")
MOMENTA = ("keep", "reset", "per_level")


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
    if cfg.multilevel_momentum not in MOMENTA:
        out.append(f"multilevel_momentum={cfg.multilevel_momentum!r}: choose one of {', '.join(MOMENTA)}")
    if cfg.multilevel_correction_batches < 1:
        out.append(f"multilevel_correction_batches={cfg.multilevel_correction_batches} must be >= 1")
    if m <= 1 and (cfg.multilevel_momentum != "keep" or cfg.multilevel_correction):
        out.append("multilevel_momentum and multilevel_correction need multilevel_levels > 1")
    if cfg.multilevel_correction and cfg.dtype == "float16":
        out.append("multilevel_correction needs dtype float32 or bfloat16 (fp16's loss scaling is not supported)")
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


class Multilevel:
    """Multilevel training as a training step sees it, one call each before the backward, after it and at a save:

        level, offset = ml.before_step(it)           # the network to run; the optimizer state switched at a new level
        ml.before_backward(batches, next_batches, mean_grad)   # a coarse phase's start: fine gradients (correction)
        ... backward of the (level, offset) network over batches ...
        ml.on_grads()                                # the coherence term subtracted from the coarse gradients

    and state_dict()/load_state_dict() for what the optimizers' own state does not hold. With multilevel_levels=1
    every step is (0, 0) and the calls do nothing."""

    def __init__(self, cfg, optimizers, params):
        self.cfg, self.optimizers, self.params = cfg, optimizers, list(params)
        self.levels = LevelStates() if cfg.multilevel_momentum == "per_level" else None
        self.coherence = Coherence(cfg.multilevel_correction) if cfg.multilevel_correction else None
        self.level, self.phase_start = (0, 0), False  # this step's (level, offset); whether a coarse phase starts
        self.fine, self.coarse_extra = {}, {}  # a phase start's gradients {param: mean grad}, until on_grads

    def before_step(self, it):
        """(level, offset) of iteration it; at a level change the optimizer state is kept, reset or swapped for the
        new level's own (multilevel_momentum)."""
        cfg = self.cfg
        level, offset = level_at(it, cfg)
        previous = level_at(it - 1, cfg) if it > 0 else None
        if previous is not None and previous[0] != level:
            if cfg.multilevel_momentum == "reset":
                reset_state(self.optimizers)
            elif cfg.multilevel_momentum == "per_level":
                self.levels.switch(self.optimizers, previous[0], level)
        self.level, self.phase_start = (level, offset), level > 0 and previous != (level, offset)
        return self.level

    def before_backward(self, batches, next_batches, mean_grad):
        """At a coarse phase's start with the correction (k = multilevel_correction_batches): the fine gradients at
        the shared point over this step's batches and k - 1 more from next_batches(), and the coarse ones over those
        k - 1; mean_grad(sets, level, offset) -> {param: gradient averaged over the sets}, leaving p.grad empty."""
        if self.coherence is None or not self.phase_start:
            return
        extra = [next_batches() for _ in range(self.cfg.multilevel_correction_batches - 1)]
        self.fine = mean_grad([batches] + extra, 0, 0)
        self.coarse_extra = mean_grad(extra, *self.level) if extra else {}

    def on_grads(self):
        """p.grad of a coarse step minus the coherence term v, which a phase start first computes from them."""
        if self.coherence is None or self.level[0] == 0:
            return
        if self.phase_start:
            self.coherence.start(self.params, self.fine, self.coarse_extra, self.cfg.multilevel_correction_batches)
            self.fine, self.coarse_extra = {}, {}
        self.coherence.apply(self.params)

    def state_dict(self):
        """The per-level optimizer states and the coherence term, by parameter index."""
        out = {}
        if self.levels is not None:
            out["levels"] = self.levels.state_dict(self.optimizers)
        if self.coherence is not None:
            out["coherence"] = self.coherence.state_dict(self.params)
        return out

    def load_state_dict(self, saved):
        if self.levels is not None:
            self.levels.load_state_dict(self.optimizers, saved.get("levels", {}))
        if self.coherence is not None:
            self.coherence.load_state_dict(self.params, saved.get("coherence", {}))


def reset_state(optimizers):
    """A fresh optimizer state, as if just built: AdamW's moments and step counts, Muon's and SGD's buffers,
    manifold Muon's dual variables all gone (multilevel_momentum='reset')."""
    for opt in optimizers:
        opt.state.clear()


class LevelStates:
    """Separate optimizer state per level (multilevel_momentum='per_level'): at a switch the state of the level
    left is put aside and the new level's own is put back (fresh the first time), shared parameters included."""

    def __init__(self):
        self.saved = {}  # level -> [optimizer.state of each optimizer]

    def switch(self, optimizers, old, new):
        self.saved[old] = [opt.state for opt in optimizers]
        states = self.saved.pop(new, None) or [defaultdict(dict) for _ in optimizers]
        for opt, state in zip(optimizers, states):
            opt.state = state

    def state_dict(self, optimizers):
        """{level: [each optimizer's packed state]} (torch's own packing, by parameter index)."""
        return {level: [_packed(opt, st) for opt, st in zip(optimizers, states)] for level, states in self.saved.items()}

    def load_state_dict(self, optimizers, saved):
        self.saved = {level: [_unpacked(opt, packed) for opt, packed in zip(optimizers, states)]
                      for level, states in saved.items()}


def _packed(opt, state):
    current, opt.state = opt.state, state
    try:
        return opt.state_dict()["state"]
    finally:
        opt.state = current


def _unpacked(opt, packed):
    current, groups = opt.state, opt.state_dict()["param_groups"]
    try:
        opt.load_state_dict({"state": packed, "param_groups": groups})
        return opt.state
    finally:
        opt.state = current


class Coherence:
    """The first-order coherence term of multigrid optimisation (MG/OPT): at the start of a coarse phase, at the
    shared point x, v = tau (grad f_H(x) - R grad f_h(x)) for every parameter of the coarse network (R: restriction
    to the shared parameters; here a subset, so R picks the fine gradient's entries); during the phase the coarse
    objective is f_H - <v, .>, i.e. v is subtracted from every coarse gradient. With tau = 1 the corrected coarse
    gradient at x equals the fine one."""

    def __init__(self, tau):
        self.tau, self.v = tau, {}

    def start(self, params, fine_grads, coarse_extra=None, k=1):
        """v from the coarse gradients now in p.grad (this step's batch) and the fine ones {param: grad}; with k > 1
        both are means over k batches: the fine ones already, the coarse ones with coarse_extra, the mean over the
        other k - 1 batches."""
        coarse_extra = coarse_extra or {}
        self.v = {p: self.tau * ((p.grad + (k - 1) * coarse_extra[p]) / k if p in coarse_extra else p.grad)
                  - self.tau * fine_grads[p] for p in params if p.grad is not None}

    def apply(self, params):
        for p in params:
            if p in self.v and p.grad is not None:
                p.grad.sub_(self.v[p])

    def state_dict(self, params):
        index = {p: i for i, p in enumerate(params)}
        return {index[p]: v for p, v in self.v.items()}

    def load_state_dict(self, params, state):
        params = list(params)
        self.v = {params[int(i)]: v.to(params[int(i)].device) for i, v in state.items()}


def recompile_limit(m):
    """torch.compile graphs needed: one per (level, offset) in training, 2^m - 1, plus eval; with some slack."""
    return 2**m + 8
