"""YuriiFormer for transformers, copied beside the weights by export.py of the yuriiformer repository, with that
repository's model.py as yuriiformer_model.py (the update rules: GD, Polyak, Nesterov with Lie-Trotter, Euler or IMEX
splitting, nGPT); this file wraps its GPT as a PreTrainedModel. Causal without a padding mask (pad on the right); no KV
cache. Load with AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)."""

from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .yuriiformer_model import GPT, GPTConfig, rope_tables


class YuriiConfig(PreTrainedConfig):
    model_type = "yuriiformer"
    model_args: dict | None = None  # model.GPTConfig's fields; the ones below repeat some for transformers' tools
    vocab_size: int = 50304
    max_position_embeddings: int = 1024
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    tie_word_embeddings: bool = True
    use_cache: bool = False  # no KV cache: each generation step runs the whole sequence


class YuriiForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = YuriiConfig
    base_model_prefix = "gpt"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]

    def __init__(self, config):
        super().__init__(config)
        self.gpt = GPT(GPTConfig(**config.model_args))
        if config.tie_word_embeddings:  # arch="gpt": the head is wte (model.py ties them)
            self._tied_weights_keys = {"gpt.lm_head.weight": "gpt.transformer.wte.weight"}
        self.post_init()

    def _init_weights(self, module):
        """GPT initialises its parameters and from_pretrained loads them all: only the rotary tables, buffers outside
        the state dict, are made anew here."""
        if isinstance(module, GPT) and hasattr(module, "rope_cos"):
            c = module.config
            cos, sin = rope_tables(c.n_embd // c.n_head, c.block_size)
            module.rope_cos.copy_(cos)
            module.rope_sin.copy_(sin)

    def get_input_embeddings(self):
        return self.gpt.transformer.wte

    def get_output_embeddings(self):
        return self.gpt.lm_head

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        if attention_mask is not None and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            raise ValueError("YuriiForCausalLM has no padding mask: pad on the right")
        # the head at every position (log-probabilities over every token for a shortlist model)
        logits = self.gpt.logits(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids[:, -self.config.max_position_embeddings:]}
