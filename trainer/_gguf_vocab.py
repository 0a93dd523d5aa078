"""Tokenizer → GGUF vocabulary, for the exporter (trainer/export.py).

llama.cpp re-implements tokenization in C++, so a GGUF file must say *which*
tokenizer algorithm and pre-tokenizer to use. Getting this wrong does not fail
loudly: the model loads and answers, but sees different token ids than it was
trained on. Two families are written:

- byte-level BPE (tokenizer model "gpt2"): tokens, types, merges, and the
  pre-tokenizer type `tokenizer.ggml.pre`. llama.cpp's converter identifies the
  pre-tokenizer by hashing the tokenization of a test string (`CHKTXT`); we
  use that table for known released tokenizers, and otherwise read the
  pre-tokenizer out of tokenizer.json and map the structures whose llama.cpp
  regexes are known to be equivalent;
- SentencePiece (tokenizer model "llama"): pieces, scores and types (byte
  tokens <0x..> included) from tokenizer.model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

# The exact text llama.cpp's convert_hf_to_gguf.py encodes to fingerprint a BPE pre-tokenizer.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

#: chkhsh → llama.cpp pre-tokenizer name, for released tokenizers of the architectures we export.
KNOWN_CHKHSH: dict[str, str] = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / Qwen2
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
}

# Split regexes of tokenizer.json that llama.cpp implements under a pre-tokenizer name.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_REGEX_PRE = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}


class VocabError(ValueError):
    """The tokenizer cannot be written so that llama.cpp tokenizes like Hugging Face."""


@dataclass
class Vocab:
    """Everything the GGUF needs about the tokenizer, gathered before writing."""

    model: str  # "gpt2" or "llama"
    pre: str
    tokens: list[str | bytes]
    toktypes: list[int]
    scores: list[float] | None = None
    special: gguf.SpecialVocab | None = None
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    notes: list[str] = field(default_factory=list)

    def add_to_gguf(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)  # type: ignore[arg-type]  # str or bytes per token, as gguf writes them
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.toktypes)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.special is not None:
            # Measured add_bos/add_eos win over tokenizer_config guesses.
            if self.add_bos is not None:
                self.special.add_special_token["bos"] = self.add_bos
            # absent means no EOS to llama.cpp; written when the reference writes it (see build_bpe_vocab)
            if self.add_eos is not None and (self.add_eos or "eos" in self.special.add_special_token):
                self.special.add_special_token["eos"] = self.add_eos
            self.special.add_to_gguf(writer, quiet=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def tokenizer_kind(model_dir: Path) -> str:
    """'bpe' for byte-level BPE tokenizer.json, 'spm' for SentencePiece; VocabError otherwise."""
    tj = _read_json(model_dir / "tokenizer.json")
    if tj is not None:
        model = tj.get("model") or {}
        pre = json.dumps(tj.get("pre_tokenizer"))
        if model.get("type") == "BPE" and '"ByteLevel"' in pre:
            return "bpe"
        if (model_dir / "tokenizer.model").is_file():
            return "spm"
        raise VocabError(
            f"the tokenizer in {model_dir} is a {model.get('type', 'unknown')} tokenizer that is neither byte-level "
            "BPE nor SentencePiece; it cannot be written to GGUF"
        )
    if (model_dir / "tokenizer.model").is_file():
        return "spm"
    raise VocabError(f"{model_dir} has no tokenizer (tokenizer.json or tokenizer.model)")


def _structural_pre(tj: dict[str, Any]) -> str | None:
    """Map tokenizer.json's normalizer/pre-tokenizer to a llama.cpp pre type with the same regexes.

    Qwen2's NFC normalizer is accepted with its regex, as llama.cpp takes the released Qwen2 tokenizers."""
    normalizer = tj.get("normalizer")
    if normalizer not in (None, {}) and normalizer != {"type": "NFC"}:
        return None
    pre = tj.get("pre_tokenizer") or {}
    steps: list[dict[str, Any]] = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]

    def byte_level_with_regex(s: dict[str, Any]) -> bool:
        return s.get("type") == "ByteLevel" and s.get("use_regex", True) and not s.get("add_prefix_space", False)

    if normalizer not in (None, {}) and kinds != ["Split", "ByteLevel"]:
        return None
    if kinds == ["ByteLevel"] and byte_level_with_regex(steps[0]):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level_with_regex(steps[1]):
        return "smollm"  # \p{N} then the GPT-2 regex, llama.cpp's SMOLLM/STARCODER type
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if steps[0].get("behavior") == "Isolated" and regex in _SPLIT_REGEX_PRE:
            found = _SPLIT_REGEX_PRE[regex]
            return found if normalizer in (None, {}) or found == "qwen2" else None
    return None


def bpe_pre_type(tokenizer: Any, tj: dict[str, Any]) -> tuple[str, str]:
    """(pre type, how it was found): the chkhsh table first, then tokenizer.json's structure."""
    chkhsh = sha256(str(tokenizer.encode(CHKTXT, verbose=False)).encode()).hexdigest()
    if chkhsh in KNOWN_CHKHSH:
        return KNOWN_CHKHSH[chkhsh], f"known tokenizer (chkhsh {chkhsh[:12]})"
    pre = _structural_pre(tj)
    if pre is not None:
        return pre, "pre-tokenizer structure of tokenizer.json"
    raise VocabError(
        "the tokenizer's pre-tokenizer is not one llama.cpp implements "
        f"(pre_tokenizer {json.dumps(tj.get('pre_tokenizer'))[:120]}); a GGUF would tokenize differently"
    )


def _measure_add_special(tokenizer: Any) -> tuple[bool, bool]:
    """Does encode() add BOS / EOS by itself? Measured, so the GGUF does what HF does."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def _added_token_type(token: Any) -> int:
    return gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED


def build_bpe_vocab(model_dir: Path, vocab_size: int, tokenizer: Any) -> Vocab:
    tj = _read_json(model_dir / "tokenizer.json") or {}
    pre, how = bpe_pre_type(tokenizer, tj)
    base_vocab: dict[str, int] = (tj.get("model") or {}).get("vocab") or {}
    added = {tok_id: tok for tok_id, tok in tokenizer.added_tokens_decoder.items()}
    n_known = max([*base_vocab.values(), *added.keys(), -1]) + 1
    if n_known > vocab_size:
        raise VocabError(f"the tokenizer has {n_known} tokens but the model's vocab_size is {vocab_size}")
    reverse = {i: t for t, i in base_vocab.items()}
    tokens: list[str | bytes] = []
    toktypes: list[int] = []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i].content)
            toktypes.append(_added_token_type(added[i]))
        elif i in reverse:
            tokens.append(reverse[i])
            toktypes.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    post = tj.get("post_processor") or {}
    if any(p.get("type") == "ByteLevel" for p in post.get("processors", [post])):
        # newer gguf-py (the converter's) reads a ByteLevel post-processor as "adds neither"
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
    if not special.merges:
        raise VocabError("the BPE tokenizer has no merges; llama.cpp cannot use it")
    add_bos, add_eos = _measure_add_special(tokenizer)
    return Vocab("gpt2", pre, tokens, toktypes, special=special, add_bos=add_bos, add_eos=add_eos,
                 notes=[f"pre-tokenizer {pre!r} from {how}"])


def _spm_add_space_prefix(model_dir: Path) -> bool:
    """LLaMA-style tokenizers put '▁' before the text; read it from tokenizer.json when present."""
    tj = _read_json(model_dir / "tokenizer.json")
    if tj is None:
        return True
    text = json.dumps(tj.get("pre_tokenizer")) + json.dumps(tj.get("normalizer"))
    if '"Metaspace"' in text:
        return '"prepend_scheme": "never"' not in text and '"add_prefix_space": false' not in text
    return '"Prepend"' in text


def _looks_special(text: str) -> bool:
    """Added tokens the reference treats as control tokens even when not marked special."""
    return text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>")) or (
        text.startswith("<｜") and text.endswith("｜>"))


def build_spm_vocab(model_dir: Path, vocab_size: int, tokenizer: Any, flavour: str = "default",
                    add_space_prefix: bool | None = None) -> Vocab:
    """Pieces, scores and types as the reference's _create_vocab_sentencepiece writes them.

    The added tokens come from the files (added_tokens.json, tokenizer_config.json's
    added_tokens_decoder; for Phi-3 also tokenizer.json's added_tokens), each marked
    control or user-defined with score -1000, including those that are also pieces.
    """
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(model_dir / "tokenizer.model"))
    tokens: list[str | bytes] = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    toktypes = [int(gguf.TokenType.UNUSED)] * vocab_size
    n_sp = sp.vocab_size()
    if n_sp > vocab_size:
        raise VocabError(f"tokenizer.model has {n_sp} pieces but the model's vocab_size is {vocab_size}")
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            toktypes[i] = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            toktypes[i] = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            toktypes[i] = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            toktypes[i] = gguf.TokenType.BYTE
        else:
            toktypes[i] = gguf.TokenType.NORMAL

    def place(tok_id: int, text: str, control: bool) -> None:
        if tok_id >= vocab_size:
            raise VocabError(f"added token {text!r} has id {tok_id} beyond vocab_size {vocab_size}")
        tokens[tok_id] = text.encode("utf-8")
        scores[tok_id] = -1000.0
        toktypes[tok_id] = gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED

    for text, tok_id in (_read_json(model_dir / "added_tokens.json") or {}).items():
        place(int(tok_id), text, control=False)
    decoder = (_read_json(model_dir / "tokenizer_config.json") or {}).get("added_tokens_decoder") or {}
    for tok_id, data in decoder.items():
        text = data["content"]
        if flavour == "phi3":
            place(int(tok_id), text, control=bool(data.get("special")))
        elif data.get("special") or _looks_special(text):
            place(int(tok_id), text, control=True)
        else:
            place(int(tok_id), text.replace("\u2581", " "), control=False)  # user-defined spaces pre-normalized
    if flavour == "phi3":
        for data in (_read_json(model_dir / "tokenizer.json") or {}).get("added_tokens", []):
            place(int(data["id"]), data["content"], control=bool(data.get("special")))
    known = {int(i) for i in decoder}
    # transformers 5 keeps added tokens only in tokenizer.json; the reference (reading tokenizer_config.json)
    # then leaves them as [PAD] and llama.cpp cannot tokenize the chat markers, so they are added from there
    for tok_id, tok in tokenizer.added_tokens_decoder.items():
        if tok_id in known or (tok_id < n_sp and (sp.IsControl(tok_id) or sp.IsUnknown(tok_id))):
            continue  # <unk> <s> </s> stay as SentencePiece marks them
        place(tok_id, tok.content, control=bool(tok.special))
    special = gguf.SpecialVocab(model_dir, n_vocab=vocab_size)
    add_bos, add_eos = _measure_add_special(tokenizer)
    if add_space_prefix is None:
        add_space_prefix = _spm_add_space_prefix(model_dir)
        if flavour == "phi3" and add_space_prefix:
            add_space_prefix = None  # llama.cpp's default; the reference writes no key for Phi-3
    return Vocab("llama", "default", tokens, toktypes, scores=scores, special=special,
                 add_bos=add_bos, add_eos=add_eos, add_space_prefix=add_space_prefix)


def build_vocab(model_dir: Path, vocab_size: int, flavour: str = "default",
                add_space_prefix: bool | None = None) -> Vocab:
    """Read the tokenizer of an HF directory and decide how llama.cpp must tokenize.

    `flavour` and `add_space_prefix` come from the architecture (ArchSpec.vocab / add_space_prefix).
    """
    from transformers import AutoTokenizer

    kind = tokenizer_kind(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if kind == "bpe":
        return build_bpe_vocab(model_dir, vocab_size, tokenizer)
    return build_spm_vocab(model_dir, vocab_size, tokenizer, flavour, add_space_prefix)
