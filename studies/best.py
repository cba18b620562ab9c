"""
The label of the best of several finished runs by final val loss (mean over the directories given for a label):

    python -m studies.best 0.01=out/a 0.02=out/b,out/c      # prints e.g. 0.02

For study queues that tune a learning rate before their main runs; unfinished runs count as infinitely bad. With
numeric labels, a best label at either end of the grid is refused (exit 2): grow the grid past it first.
"""

import math
import sys

import runlog


def final_loss(path):
    try:
        run = runlog.Run(path)
    except FileNotFoundError:
        return math.inf
    loss = run.final.get("final_val_loss") if run.finished else None
    return loss if loss is not None and math.isfinite(loss) else math.inf


def main(argv=None):
    specs = [a.partition("=") for a in (sys.argv[1:] if argv is None else argv)]
    if not specs or any(not eq for _, eq, _ in specs):
        sys.exit("error: give LABEL=DIR[,DIR...] pairs")
    score = {label: sum(final_loss(d) for d in dirs.split(",")) / len(dirs.split(",")) for label, _, dirs in specs}
    best = min(score, key=score.get)
    if not math.isfinite(score[best]):
        sys.exit("error: none of the runs finished")
    try:
        order = sorted(score, key=float)
    except ValueError:
        order = None
    if order and len(order) > 2 and best in (order[0], order[-1]):
        sys.exit(f"error: the best label {best} is at the edge of the grid {order[0]} .. {order[-1]}: add a point past it")
    print(best)


if __name__ == "__main__":
    main()
