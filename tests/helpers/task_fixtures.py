"""Fixture files for every task of the medical suite, in each dataset's own hub layout and columns.

Written for the project (no real exam question is shipped): a few rows per task, with the
inputs that trip renderers up: leading and trailing whitespace, newlines inside a stem, an
empty option, unicode look-alike letters (Cyrillic А, full-width Ｂ), an empty abstract.
`write_task_files(root)` lays them out as data_dir()/datasets/org--name would hold them after
`medalpaca download --dataset` (revision refs/convert/parquet: CONFIG/SPLIT/0000.parquet).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

MEDQA_ROWS: list[dict[str, Any]] = [
    {"id": "fx-1", "sent1": "  A 34-year-old woman has fatigue and pale conjunctivae. Which test comes first?",
     "sent2": "", "ending0": "Complete blood count", "ending1": "Bone marrow biopsy ",
     "ending2": "Serum ferritin", "ending3": "Hemoglobin electrophoresis", "label": 0},
    {"id": "fx-2", "sent1": "Which vitamin deficiency causes scurvy?\n", "sent2": "Vitamin",
     "ending0": "Vitamin А (Cyrillic А)", "ending1": "Vitamin Ｂ12", "ending2": "Vitamin C", "ending3": "Vitamin D",
     "label": 2},
    {"id": "fx-3", "sent1": "A child with a barking cough and stridor most likely has:",
     "sent2": "", "ending0": "croup", "ending1": "epiglottitis", "ending2": "", "ending3": "  asthma", "label": 0},
]

MEDMCQA_ROWS: list[dict[str, Any]] = [
    {"id": "mm-1", "question": "Which nerve supplies the deltoid muscle?", "opa": "Axillary nerve",
     "opb": "Radial nerve", "opc": "Musculocutaneous nerve", "opd": "Ulnar nerve", "cop": 0,
     "choice_type": "single", "exp": None, "subject_name": "Anatomy", "topic_name": "Upper limb"},
    {"id": "mm-2", "question": " Drug of choice in anaphylaxis is: ", "opa": "Adrenaline", "opb": "",
     "opc": "Atropine ", "opd": "Hydrocortisone", "cop": 0, "choice_type": "single",
     "exp": "Adrenaline first.", "subject_name": "Pharmacology", "topic_name": None},
    {"id": "mm-3", "question": "All of the following are\ncauses of microcytic anaemia EXCEPT:",
     "opa": "Iron deficiency", "opb": "Thalassaemia", "opc": "Sideroblastic anaemia",
     "opd": "Vitamin Ｂ12 deficiency", "cop": 3, "choice_type": "multi", "exp": "", "subject_name": "Medicine",
     "topic_name": "Haematology"},
]

PUBMEDQA_ROWS: list[dict[str, Any]] = [
    {"QUESTION": "Does early mobilisation shorten hospital stay after hip surgery?",
     "CONTEXTS": ["We followed 120 patients after hip surgery.", "Half walked on day one.",
                  " Stays were shorter in that group. "],
     "LABELS": ["METHODS", "METHODS", "RESULTS"], "MESHES": ["Hip", "Early Ambulation"], "YEAR": "2001",
     "reasoning_required_pred": "yes", "reasoning_free_pred": "yes", "final_decision": "yes",
     "LONG_ANSWER": "Early mobilisation shortened the stay."},
    {"QUESTION": "Is coffee intake linked to migraine frequency?", "CONTEXTS": ["A survey of 300 adults."],
     "LABELS": ["METHODS"], "MESHES": [], "YEAR": "2010", "reasoning_required_pred": "maybe",
     "reasoning_free_pred": "no", "final_decision": "maybe", "LONG_ANSWER": "Unclear."},
    {"QUESTION": "  Does a placebo cure fractures?", "CONTEXTS": [], "LABELS": [], "MESHES": [], "YEAR": "1999",
     "reasoning_required_pred": "no", "reasoning_free_pred": "no", "final_decision": "no",
     "LONG_ANSWER": "No."},
]

MMLU_ROWS: dict[str, list[dict[str, Any]]] = {
    "anatomy": [
        {"question": "  Which bone forms the point of the elbow?  ", "subject": "anatomy",
         "choices": ["Olecranon of the ulna", " Head of the radius", "Medial epicondyle ", "Coracoid"], "answer": 0},
        {"question": "The femoral nerve arises from\nwhich roots?", "subject": "anatomy",
         "choices": ["L2-L4", "L4-S3", "S1-S3", "T12-L1"], "answer": 0},
    ],
    "clinical_knowledge": [
        {"question": "Normal adult resting heart rate is:", "subject": "clinical_knowledge",
         "choices": ["60-100 per minute", "30-50 per minute", "120-160 per minute", ""], "answer": 0},
    ],
    "college_biology": [
        {"question": "Where does glycolysis take place?", "subject": "college_biology",
         "choices": ["Mitochondrial matrix", "Cytoplasm", "Nucleus", "Golgi"], "answer": 1},
    ],
    "college_medicine": [
        {"question": "Insulin is secreted by which cells?", "subject": "college_medicine",
         "choices": ["Alpha cells", "Beta cells", "Delta cells", "Acinar cells"], "answer": 1},
    ],
    "medical_genetics": [
        {"question": "Cystic fibrosis is inherited as:", "subject": "medical_genetics",
         "choices": ["Autosomal dominant", "Autosomal recessive", "X-linked", "Mitochondrial"], "answer": 1},
    ],
    "professional_medicine": [
        {"question": "First-line treatment of anaphylaxis is:", "subject": "professional_medicine",
         "choices": ["Intramuscular adrenaline", "Oral antihistamine", "Inhaled salbutamol", "IV fluids only"],
         "answer": 0},
    ],
}


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_task_files(root: Path) -> dict[str, Path]:
    """Every task's files under `root` (a datasets folder); returns task key -> its repo folder."""
    from resources import resource_path

    medqa = root / "GBaker--MedQA-USMLE-4-options-hf"
    _parquet(medqa / "default" / "test" / "0000.parquet", MEDQA_ROWS)
    medmcqa = root / "openlifescienceai--medmcqa"
    _parquet(medmcqa / "default" / "validation" / "0000.parquet", MEDMCQA_ROWS)
    pubmedqa = root / "bigbio--pubmed_qa"
    _parquet(pubmedqa / "pubmed_qa_labeled_fold0_source" / "test" / "0000.parquet", PUBMEDQA_ROWS)
    mmlu = root / "cais--mmlu"
    for subject, rows in MMLU_ROWS.items():
        _parquet(mmlu / subject / "test" / "0000.parquet", rows)
    usmle = root / "medalpaca--medical_meadow_usmle_self_assessment"
    shutil.copytree(resource_path("sample_questions/usmle"), usmle, dirs_exist_ok=True)
    (usmle / "README.md").unlink(missing_ok=True)
    folders = {"medqa_4options": medqa, "medmcqa": medmcqa, "pubmedqa": pubmedqa, "usmle": usmle}
    folders.update({f"mmlu_{subject}": mmlu for subject in MMLU_ROWS})
    return folders


def task_file_bytes(folder: Path) -> dict[str, bytes]:
    """A repo folder's files as the hub would serve them (for tests/hub_server.py)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
