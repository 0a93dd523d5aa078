"""trainer.data: formats, validation errors with file and line, prompts, masking, EOS, split, mix, packing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from trainer.config import TrainConfig
from trainer.data import (
    IGNORE,
    DataError,
    Record,
    build_datasets,
    build_prompt,
    length_stats,
    load_records,
    make_collator,
    mix_counts,
    mix_sources,
    pack_examples,
    split_records,
    tokenize_record,
)

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "medical_instructions.jsonl"

RECS = [
    {"instruction": "Define the term.", "input": "tachycardia", "output": "A fast heart rate."},
    {"instruction": "What is anemia?", "input": "", "output": "Too little hemoglobin in the blood."},
    {"instruction": "Name the organ that makes bile.", "output": "The liver."},
]


def _cfg(data: list[str], **kw) -> TrainConfig:
    return TrainConfig(data=[str(d) for d in data], **kw)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


# ------------------------------------------------------------------ formats


def test_jsonl_json_csv_tsv_and_saved_dataset_load(tmp_path):
    import datasets

    _jsonl(tmp_path / "a.jsonl", RECS)
    (tmp_path / "b.json").write_text(json.dumps(RECS), encoding="utf-8")
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer"])
        w.writerows([["What is dyspnea?", "Shortness of breath."],
                     ["What is edema?", "Swelling from fluid,\nin tissue."]])
    (tmp_path / "d.tsv").write_text("instruction\tinput\toutput\nDefine.\tbradycardia\tA slow heart rate.\n",
                                    encoding="utf-8")
    datasets.Dataset.from_list(RECS[:2]).save_to_disk(str(tmp_path / "saved"))
    recs = load_records(_cfg([tmp_path / "a.jsonl", tmp_path / "b.json",
                              f"{tmp_path / 'c.csv'}?instruction=question&output=answer", tmp_path / "d.tsv",
                              tmp_path / "saved"]))
    assert len(recs) == 3 + 3 + 2 + 1 + 2
    assert recs[2] == Record("Name the organ that makes bile.", "", "The liver.", str(tmp_path / "a.jsonl"),
                             f"{tmp_path / 'a.jsonl'} line 3")
    assert recs[7].output == "Swelling from fluid,\nin tissue." and recs[7].instruction == "What is edema?"
    assert recs[8].input == "bradycardia"


def test_saved_dataset_dict_trains_on_its_train_split(tmp_path):
    import datasets

    splits = {"train": datasets.Dataset.from_list(RECS[:2]), "test": datasets.Dataset.from_list(RECS[2:])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    recs = load_records(_cfg([tmp_path / "dd"]))
    assert [r.instruction for r in recs] == [RECS[0]["instruction"], RECS[1]["instruction"]]
    assert recs[1].where == f"{tmp_path / 'dd'} record 2"
    datasets.DatasetDict({"test": splits["test"], "validation": splits["train"]}).save_to_disk(str(tmp_path / "tv"))
    with pytest.raises(DataError, match=r"tv: a dataset with splits test, validation and no 'train'"):
        load_records(_cfg([tmp_path / "tv"]))


def test_json_file_written_as_json_lines_is_read(tmp_path):
    """datasets' to_json writes JSON Lines into a .json file by default."""
    path = _jsonl(tmp_path / "meadow.json", RECS)
    assert len(load_records(_cfg([path]))) == 3


def test_sample_file_validates_and_is_large_enough():
    recs = load_records(_cfg([SAMPLE]))
    assert len(recs) >= 100
    assert len({(r.instruction, r.input) for r in recs}) == len(recs)  # no duplicates
    assert (SAMPLE.parent / "README.md").read_text(encoding="utf-8").count("Apache-2.0") == 1


# ------------------------------------------------------------------ validation


def test_bad_records_name_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(RECS[0]), "", json.dumps({"instruction": "x"}), json.dumps({**RECS[0], "output": "  "}),
             json.dumps({**RECS[0], "output": 5}), "{not json", json.dumps(["a", "b"]),
             json.dumps({"instruction": "", "input": "", "output": "y"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_records(_cfg([path]))
    msg = str(err.value).splitlines()
    assert msg[0].startswith("training data: 6 problems in 1 source(s)")
    assert f"{path} line 3: 'output' is missing" in msg[1]
    assert f"{path} line 4: 'output' is empty" in msg[2]
    assert f"{path} line 5: 'output' is not text" in msg[3]
    assert f"{path} line 6: not valid JSON" in msg[4]
    assert f"{path} line 7: expected an object" in msg[5]
    assert f"{path} line 8: 'instruction' and 'input' are both empty" in msg[6]


def test_json_list_errors_say_record_and_csv_errors_say_line(tmp_path):
    js = tmp_path / "list.json"
    js.write_text(json.dumps([RECS[0], {"instruction": "q", "output": None}]), encoding="utf-8")
    cs = tmp_path / "t.csv"
    cs.write_text('q,a\n"multi\nline",ok\nhello,\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_records(_cfg([js, f"{cs}?instruction=q&output=a"]))
    text = str(err.value)
    assert f"{js} record 2: 'output' is missing" in text
    assert f"{cs}?instruction=q&output=a line 4: 'a' (the output) is empty" in text


def test_many_errors_are_capped(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "q"}] * 50)
    with pytest.raises(DataError) as err:
        load_records(_cfg([path]))
    lines = str(err.value).splitlines()
    assert "50 problems" in lines[0] and "first 20 listed" in lines[0]
    assert len(lines) == 21


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", None, "no such file or folder"),
    ("empty.jsonl", "", "the file is empty"),
    ("notes.txt", "hello", "unsupported file type '.txt'"),
    ("broken.json", "[{", "not valid JSON"),
    ("none.json", "[]", "no records"),
    ("cols.csv", "a,b\n1,2\n", "no column 'instruction'"),
])
def test_file_level_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        load_records(_cfg([path]))


def test_unknown_mapping_field_and_plain_folder(tmp_path):
    with pytest.raises(DataError, match="unknown field 'answer'"):
        load_records(_cfg([f"{tmp_path}/x.csv?answer=b"]))
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        load_records(_cfg([tmp_path]))


# ------------------------------------------------------------------ prompts, masking, EOS


def test_medalpaca_prompt_matches_chat_side():
    from medalpaca_desktop.core.chat_protocol import ChatMessage
    from medalpaca_desktop.core.prompts import render_medalpaca

    bare, _ = build_prompt(Record("Define the term.", "", "x"), "medalpaca")
    assert bare == render_medalpaca([ChatMessage("user", "Define the term.")])  # what the chat tab sends
    rec = Record("Define the term.", "tachycardia", "A fast heart rate.")
    prompt, full = build_prompt(rec, "medalpaca")
    assert prompt.endswith("### Instruction:\nDefine the term.\n\n### Input:\ntachycardia\n\n### Response:\n")
    assert full == prompt + "A fast heart rate."


@pytest.mark.parametrize("template", ["medalpaca", "chat"])
@pytest.mark.parametrize("inp", ["", "tachycardia"])
def test_masked_labels_decode_to_output_plus_eos(tok, template, inp):
    rec = Record("Define the term.", inp, "A fast heart rate above 100 per minute.")
    ex = tokenize_record(rec, tok, template, train_on_inputs=False, max_length=512)
    kept = [t for t in ex.labels if t != IGNORE]
    assert tok.decode(kept) == rec.output + tok.eos_token
    assert kept.count(tok.eos_token_id) == 1 and ex.input_ids[-1] == tok.eos_token_id
    if template == "medalpaca":  # (ChatML also closes the user turn with <|im_end|>, the EOS)
        assert ex.input_ids.count(tok.eos_token_id) == 1
    assert not ex.boundary_moved
    first = ex.labels.index(kept[0])
    assert all(t == IGNORE for t in ex.labels[:first]) and ex.labels[first:] == ex.input_ids[first:]


def test_train_on_inputs_keeps_prompt_labels(tok):
    ex = tokenize_record(Record("What is anemia?", "", "Low hemoglobin."), tok, train_on_inputs=True)
    assert ex.labels == ex.input_ids


def test_output_that_already_ends_with_eos_gets_no_second_one(tok):
    ex = tokenize_record(Record("Q?", "", "Answer." + tok.eos_token), tok)
    assert ex.input_ids.count(tok.eos_token_id) == 1


def test_sentencepiece_tokenizer_boundary(tiny_llama_sp_dir):
    from transformers import AutoTokenizer

    sp = AutoTokenizer.from_pretrained(tiny_llama_sp_dir)
    ex = tokenize_record(Record("Define the term.", "fever", "A raised body temperature."), sp)
    assert ex.input_ids[0] == sp.bos_token_id and ex.input_ids[-1] == sp.eos_token_id
    assert ex.input_ids.count(sp.eos_token_id) == 1
    kept = [t for t in ex.labels if t != IGNORE]
    assert sp.decode(kept, skip_special_tokens=True).strip() == "A raised body temperature."


def test_truncation_and_length_stats(tok):
    ex = tokenize_record(Record("Q?", "", "word " * 200), tok, max_length=64)
    assert len(ex.input_ids) == len(ex.labels) == 64 and ex.full_length > 64
    stats = length_stats([10, 20, 30, 40, 300], max_length=32)
    assert (stats.count, stats.p50, stats.p95, stats.max, stats.truncated) == (5, 30, 300, 300, 2)
    assert stats.truncated_share == 0.4 and stats.mean == 80.0
    assert type(stats).from_dict(stats.to_dict()) == stats


# ------------------------------------------------------------------ split, mix, packing


def test_split_is_deterministic_and_disjoint():
    items = list(range(100))
    train, val = split_records(items, 0.1, seed=42)
    assert (train, val) == split_records(items, 0.1, seed=42)
    assert len(val) == 10 and sorted(train + val) == items
    assert split_records(items, 0.1, seed=7)[1] != val
    assert split_records(items, 0.0, 42) == (split_records(items, 0.0, 42)[0], [])
    assert len(split_records([1, 2, 3], 0.1, 42)[1]) == 1


def test_mix_counts_follow_weights():
    assert mix_counts([100, 50], []) == [100, 50]
    assert mix_counts([100, 50], [1, 1]) == [75, 75]
    assert mix_counts([90, 30], [3, 1]) == [90, 30]
    mixed = mix_sources([["a"] * 10, ["b"] * 2], [1, 1], seed=1)
    assert mixed.count("a") == 6 and mixed.count("b") == 6
    assert mixed == mix_sources([["a"] * 10, ["b"] * 2], [1, 1], seed=1)


def test_pack_examples_rows_positions_and_labels():
    from trainer.data import Example

    exs = [Example([1, 2, 3], [IGNORE, 2, 3], 3), Example([4, 5], [4, 5], 2), Example([6, 7, 8, 9], [6, 7, 8, 9], 4)]
    rows = pack_examples(exs, max_length=6, pad_id=0)
    assert all(len(r) == 6 for key in rows for r in rows[key])
    assert rows["input_ids"] == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]]
    assert rows["labels"] == [[IGNORE, 2, 3, IGNORE, 5, IGNORE], [IGNORE, 7, 8, 9, IGNORE, IGNORE]]
    assert rows["position_ids"] == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]


def test_packed_examples_do_not_attend_to_each_other(tiny_llama_dir, tok):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    a = tokenize_record(Record("What is anemia?", "", "Low hemoglobin."), tok)
    b = tokenize_record(Record("Define.", "edema", "Swelling."), tok)
    rows = pack_examples([a, b], max_length=len(a.input_ids) + len(b.input_ids) + 3, pad_id=tok.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor(rows["input_ids"]),
                       position_ids=torch.tensor(rows["position_ids"]), use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([b.input_ids])).logits[0]
    start = len(a.input_ids)
    torch.testing.assert_close(packed[start:start + len(b.input_ids)], alone, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ end to end


def test_build_datasets_on_sample(tok):
    cfg = _cfg([SAMPLE], val_split=0.1, seed=42, max_length=400, template="medalpaca")
    data = build_datasets(cfg, tok)
    assert len(data.train) + len(data.val) == 120
    assert set(data.train.column_names) == {"input_ids", "attention_mask", "labels"}
    assert data.stats.count == 120 and 0 <= data.stats.truncated_share <= 1
    assert data.sources[0].records == 120 and data.sources[0].val == len(data.val) == 12
    again = build_datasets(cfg, tok)
    assert again.train["input_ids"] == data.train["input_ids"] and again.val["input_ids"] == data.val["input_ids"]
    for row in data.train.select(range(5)):
        assert len(row["input_ids"]) <= 400 and len(row["labels"]) == len(row["input_ids"])


def test_build_datasets_mixed_weighted_packed_chat(tmp_path, tok):
    small = _jsonl(tmp_path / "small.jsonl", RECS * 4)  # 12 records
    cfg = _cfg([SAMPLE, small], data_weights=[1, 1], val_split=0.0, max_length=512, packing=True, template="chat")
    data = build_datasets(cfg, tok)
    assert [s.train for s in data.sources] == [66, 66]
    assert set(data.train.column_names) == {"input_ids", "labels", "position_ids"}
    assert all(len(r) == 512 for r in data.train["input_ids"])
    assert len(data.train) < 132 / 2
    assert data.val is None and data.packed and data.template == "chat"
    assert any(n.startswith("mix:") for n in data.notes) and any(n.startswith("packing:") for n in data.notes)
    batch = make_collator(data, tok)([data.train[0], data.train[1]])
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # an attention_mask would disable packing


def test_unpacked_collator_pads_labels(tok):
    data = build_datasets(_cfg([SAMPLE], val_split=0.0, max_length=400), tok)
    rows = [data.train[i] for i in range(4)]
    batch = make_collator(data, tok)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, longest)
    short = min(range(4), key=lambda i: len(rows[i]["input_ids"]))
    assert batch["labels"][short, -1].item() == IGNORE


def test_prompt_longer_than_max_length_is_dropped_with_a_note(tmp_path, tok):
    path = _jsonl(tmp_path / "long.jsonl", [{"instruction": "word " * 200, "output": "Yes."}, RECS[0]])
    data = build_datasets(_cfg([path], val_split=0.0, max_length=220), tok)
    assert len(data.train) == 1 and data.stats.truncated == 1
    assert any("left out" in n for n in data.notes)


def test_chat_template_missing_is_a_data_error(tok, tmp_path):
    class NoTemplate:
        chat_template = None

    with pytest.raises(DataError, match="no chat template"):
        build_prompt(Record("q", "", "a"), "chat", NoTemplate())
