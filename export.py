"""
Export a checkpoint as a transformers model directory: AutoModelForCausalLM and AutoTokenizer load it offline.

    python export.py --out_dir=out-tinystories-baseline-cpu --to=hf-baseline      # GPT2LMHeadModel if trained with --shortlist=0
    python export.py --out_dir=out-tinystories-nesterov-cpu --to=hf-nesterov      # trust_remote_code=True

The baseline without a shortlist (update=gd, split=lie_trotter, learned positions, GELU: nanoGPT's GPT-2 block) and any
nanoGPT checkpoint become a transformers GPT2LMHeadModel. nanoGPT's parameter names are GPT-2's; the Linear weights are
transposed into GPT-2's Conv1D layout (in, out); a model without biases gets zero biases; the head stays tied to wte;
the vocabulary keeps its padding rows (logits over vocab_size, 50304, as ours); activation_function="gelu", the exact
GELU that model.py uses by default (transformers' GPT-2 default, gelu_new, is the tanh approximation: a model started
from GPT-2, activation="gelu_tanh", gets gelu_new). pretrained.load_gpt2 reads the directory back.

Every other variant (Polyak, YuriiFormer, Euler, IMEX, nGPT, RoPE, SwiGLU) becomes YuriiForCausalLM, a
PreTrainedModel around this repo's GPT. Its code is copied beside the weights (hf/modeling_yuriiformer.py, and
model.py as yuriiformer_model.py), so it needs nothing from this repo: load it with trust_remote_code=True.
It is causal without a padding mask (pad on the right, as the harness's HF model does) and has no KV cache.

Both get GPT-2's tokenizer (tokenizer.json), built from the ranks in data/gpt2.tiktoken: no download. After writing,
the directory is loaded back with AutoModelForCausalLM and its fp32 logits on a probe sequence are checked against
ours. transformers is an optional extra: pip install -e ".[export]" (the eval extra has it too).
"""

import functools
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tiktoken.load import load_tiktoken_bpe

import checkpoint
from configurator import ConfigError, build, parse_args
from data import tokenizer
from pretrained import CONV1D
from utils import first_line

ROOT = Path(__file__).resolve().parent
TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}  # our activation -> transformers' GPT-2 activation_function
TOLERANCE = 1e-4  # the load-back check: max |logit difference| (fp32)


class ExportError(ValueError):
    """A user error (setting, checkpoint, missing package); main() prints it as one line and exits with 2."""


@dataclass
class ExportConfig:
    out_dir: str = "out"  # run directory written by train.py (or nanoGPT)
    ckpt: str = "best"  # best (best.pt) | latest (ckpt.pt) | auto (best.pt, else ckpt.pt)
    ckpt_path: str = ""  # a checkpoint file to export instead
    to: str = ""  # the directory to write (required)
    format: str = "auto"  # auto (gpt2 where the model is GPT-2, else yuriiformer) | gpt2 | yuriiformer
    overwrite: bool = False  # write into a non-empty --to
    check: bool = True  # load the directory back and compare its logits with ours


def load_transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError('export needs transformers: pip install -e ".[export]" (or pip install "transformers>=5,<6")') from None
    return transformers


def gpt2_problem(c):
    """Why a GPTConfig is not GPT-2's architecture ('' when it is)."""
    want = dict(update="gd", split="lie_trotter", arch="gpt", position="learned", embed_extra=False, shortlist=0)
    bad = [f"{k}={getattr(c, k)!r}" for k, v in want.items() if getattr(c, k) != v]
    bad += [f"activation={c.activation!r}"] if c.activation not in TO_HF else []
    return f"{', '.join(bad)} is not GPT-2's block" if bad else ""


def to_gpt2(model):
    """Our baseline GPT as a transformers GPT2LMHeadModel with the same function."""
    transformers = load_transformers()
    c = model.config
    hf_config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        activation_function=TO_HF[c.activation], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        bos_token_id=tokenizer.EOT, eos_token_id=tokenizer.EOT, tie_word_embeddings=True)
    hf = transformers.GPT2LMHeadModel(hf_config)
    ours, state, buffers = model.state_dict(), {}, {n for n, _ in hf.named_buffers()}
    for name, like in hf.state_dict().items():
        if name in buffers:  # transformers' own (a causal mask, if any)
            continue
        if name == "lm_head.weight":  # tied to wte
            state[name] = ours["transformer.wte.weight"]
        elif name in ours:
            state[name] = ours[name].t() if name.endswith(CONV1D) else ours[name]
        elif name.endswith(".bias"):  # bias=False: GPT-2 has them, zero
            state[name] = torch.zeros_like(like)
        else:
            raise ExportError(f"transformers' GPT-2 has {name}, which the checkpoint lacks: try --format=yuriiformer")
    unused = set(ours) - set(state) - {"lm_head.weight"}
    if unused:
        raise ExportError(f"GPT-2 has no place for {sorted(unused)[:3]}: use --format=yuriiformer")
    hf.load_state_dict(state, strict=not buffers)
    return hf.eval()


def write_yuriiformer(model, to):
    """Our GPT as YuriiForCausalLM: config.json, model.safetensors and the two code files."""
    transformers = load_transformers()
    from safetensors.torch import save_file
    c = model.config
    tied = c.arch == "gpt"
    shutil.copyfile(ROOT / "hf" / "modeling_yuriiformer.py", to / "modeling_yuriiformer.py")
    shutil.copyfile(ROOT / "model.py", to / "yuriiformer_model.py")
    config = dict(model_type="yuriiformer", architectures=["YuriiForCausalLM"],
                  auto_map={"AutoConfig": "modeling_yuriiformer.YuriiConfig",
                            "AutoModelForCausalLM": "modeling_yuriiformer.YuriiForCausalLM"},
                  model_args=model.model_args(), vocab_size=c.vocab_size, max_position_embeddings=c.block_size,
                  hidden_size=c.n_embd, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                  tie_word_embeddings=tied, use_cache=False, bos_token_id=tokenizer.EOT, eos_token_id=tokenizer.EOT,
                  dtype="float32", transformers_version=transformers.__version__)
    (to / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {f"gpt.{k}": (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    if tied:
        del state["gpt.lm_head.weight"]  # the same tensor as wte: transformers ties it back (_tied_weights_keys)
    save_file(state, str(to / "model.safetensors"), metadata={"format": "pt"})


def byte_chars():
    """GPT-2's printable stand-in for each byte (vocab.json's alphabet): printable Latin-1 bytes stand for themselves,
    the others (control characters, space, NBSP, soft hyphen) for 256, 257, ... in byte order."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, extra = {}, 0
    for b in range(256):
        out[b] = chr(b) if b in printable else chr(256 + extra)
        extra += b not in printable
    return out


def bpe_merges(ranks):
    """GPT-2's merge list from tiktoken's ranks: each token of two or more bytes is the merge of the two parts that
    byte-pair encoding with the lower-ranked tokens splits it into; in rank order, so merge priority = rank."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair, as encoding does, short of the token itself
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[i] >= rank:
                raise ExportError(f"token {token!r} is not a merge of lower-ranked tokens: data/gpt2.tiktoken is damaged")
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append(tuple(parts))
    return merges


@functools.cache
def gpt2_vocab():
    """(vocab, merges) of GPT-2's tokenizer in transformers' byte-level alphabet, from the embedded ranks."""
    tokenizer.get_encoding()  # checks the ranks file's hash
    ranks = load_tiktoken_bpe(str(tokenizer.RANKS), expected_hash=tokenizer.RANKS_SHA256)
    chars = byte_chars()
    text = lambda token: "".join(chars[b] for b in token)  # noqa: E731
    vocab = {text(token): rank for token, rank in ranks.items()}
    vocab["<|endoftext|>"] = tokenizer.EOT
    return vocab, [(text(a), text(b)) for a, b in bpe_merges(ranks)]


def gpt2_tokenizer(model_max_length):
    """GPT-2's tokenizer as a transformers tokenizer: the same ids as data/tokenizer.py's encode_ordinary (where the
    text does not spell <|endoftext|>, which transformers reads as the special token)."""
    vocab, merges = gpt2_vocab()
    return load_transformers().GPT2Tokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


@torch.no_grad()
def check(model, to, trust_remote_code):
    """Max |logit difference| between ours and the directory loaded back by AutoModelForCausalLM (fp32)."""
    transformers = load_transformers()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(to), trust_remote_code=trust_remote_code,
                                                          dtype=torch.float32).eval()
    T = min(model.config.block_size, 64)
    idx = torch.randint(0, tokenizer.EOT, (2, T), generator=torch.Generator().manual_seed(0))
    ours, theirs = model.logits(idx).float(), hf(idx).logits.float()
    return torch.where(theirs == ours, 0.0, theirs - ours).abs().max().item()  # equal infinities (a shortlist's pads) agree


def export(cfg):
    """Write cfg.out_dir's checkpoint as a transformers directory; returns what was written and the check."""
    if not cfg.to:
        raise ExportError("give the directory to write: --to=DIR")
    if cfg.format not in ("auto", "gpt2", "yuriiformer"):
        raise ExportError(f"format={cfg.format!r}: choose one of auto, gpt2, yuriiformer")
    load_transformers()
    model, ckpt, path = checkpoint.load_for_inference(cfg.out_dir, cfg.ckpt, cfg.ckpt_path, dtype=torch.float32)
    problem = gpt2_problem(model.config)
    fmt = cfg.format if cfg.format != "auto" else "yuriiformer" if problem else "gpt2"
    if fmt == "gpt2" and problem:
        raise ExportError(f"{path}: {problem}: export it with --format=yuriiformer (or --format=auto)")
    if model.config.vocab_size < tokenizer.EOT + 1:
        raise ExportError(f"the model's vocab_size={model.config.vocab_size} is smaller than GPT-2 BPE's "
                          f"{tokenizer.EOT + 1}: only models trained on GPT-2 BPE tokens export with its tokenizer")
    to = Path(cfg.to)
    if to.exists() and (not to.is_dir() or (any(to.iterdir()) and not cfg.overwrite)):
        raise ExportError(f"{to} exists and is not empty: choose another --to, or --overwrite=True")
    try:
        to.mkdir(parents=True, exist_ok=True)
        if fmt == "gpt2":
            to_gpt2(model).save_pretrained(str(to))
        else:
            write_yuriiformer(model, to)
        gpt2_tokenizer(model.config.block_size).save_pretrained(str(to))
    except OSError as e:  # permissions, a full disk
        raise ExportError(f"cannot write {to} ({type(e).__name__}: {first_line(e)}): check --to and the free disk") from None
    out = dict(format=fmt, to=str(to), checkpoint=str(path), iter=ckpt.get("iter_num"))
    if cfg.check:
        out["max_logit_diff"] = diff = check(model, to, trust_remote_code=fmt == "yuriiformer")
        if not diff <= TOLERANCE:
            raise ExportError(f"{to}: the exported model's logits differ from ours by {diff:.3g} (> {TOLERANCE}): "
                              "please report this with the checkpoint's model_args")
    return out


def main(argv=None):
    try:
        cfg = build(ExportConfig, parse_args(sys.argv[1:] if argv is None else argv))
        out = export(cfg)
    except (ConfigError, ExportError, checkpoint.CheckpointError, tokenizer.TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    how = ", trust_remote_code=True" if out["format"] == "yuriiformer" else ""
    checked = f"; its logits match ours (max |difference| {out['max_logit_diff']:.2g})" if "max_logit_diff" in out else ""
    print(f"wrote {out['to']} ({out['format']}, from {out['checkpoint']}){checked}; load it with "
          f"AutoModelForCausalLM.from_pretrained({out['to']!r}{how})")


if __name__ == "__main__":
    main()
