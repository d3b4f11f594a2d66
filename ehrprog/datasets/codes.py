"""The code lists of the simulated world "history": real ICD-10-CM codes for the latent comorbidity
phenotypes, real RxNorm ingredients for the dated medications, and a long-tailed background
vocabulary unrelated to the kidney.

Phenotype codes are real ICD-10-CM codes (FY2024 release) with their official short titles.
Background codes have the formats of their code systems (ICD-10-CM letter + two digits + a
subcategory, CPT-4 five digits, RxNorm numbers) and are drawn once from a fixed generator (not
the simulation's seed): they are format-valid identifiers, not every one a billable code, and
carry the description "background code" (they stand for the many records unrelated to CKD).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

#: Sex-specific ICD-10-CM categories (genital organs, pregnancy): no background code is one.
_SEX_SPECIFIC = re.compile(r"^ICD10CM/(Z3[3-6]|C5[1-8]|C6[0-3])")

#: Diabetic microvascular disease: retinopathy, neuropathy, angiopathy, foot disease (the kidney
#: complication codes E11.21/E11.22 are left out: they would record the disease being predicted).
DIABETIC_MICROVASCULAR: dict[str, str] = {
    "ICD10CM/E11.29": "Type 2 diabetes mellitus with other diabetic kidney complication",
    "ICD10CM/E11.311": "Type 2 diabetes mellitus with unspecified diabetic retinopathy with macular edema",
    "ICD10CM/E11.319": "Type 2 diabetes mellitus with unspecified diabetic retinopathy without macular edema",
    "ICD10CM/E11.3211": "Type 2 DM with mild nonproliferative diabetic retinopathy with macular edema, right eye",
    "ICD10CM/E11.3291": "Type 2 DM with mild nonproliferative diabetic retinopathy without macular edema, right eye",
    "ICD10CM/E11.3311": "Type 2 DM with moderate nonproliferative diabetic retinopathy with macular edema, right eye",
    "ICD10CM/E11.3391": "Type 2 DM with moderate nonproliferative retinopathy without macular edema, right eye",
    "ICD10CM/E11.3411": "Type 2 DM with severe nonproliferative diabetic retinopathy with macular edema, right eye",
    "ICD10CM/E11.3491": "Type 2 DM with severe nonproliferative retinopathy without macular edema, right eye",
    "ICD10CM/E11.3511": "Type 2 DM with proliferative diabetic retinopathy with macular edema, right eye",
    "ICD10CM/E11.3591": "Type 2 DM with proliferative diabetic retinopathy without macular edema, right eye",
    "ICD10CM/E11.36": "Type 2 diabetes mellitus with diabetic cataract",
    "ICD10CM/E11.39": "Type 2 diabetes mellitus with other diabetic ophthalmic complication",
    "ICD10CM/E11.40": "Type 2 diabetes mellitus with diabetic neuropathy, unspecified",
    "ICD10CM/E11.41": "Type 2 diabetes mellitus with diabetic mononeuropathy",
    "ICD10CM/E11.42": "Type 2 diabetes mellitus with diabetic polyneuropathy",
    "ICD10CM/E11.43": "Type 2 diabetes mellitus with diabetic autonomic (poly)neuropathy",
    "ICD10CM/E11.44": "Type 2 diabetes mellitus with diabetic amyotrophy",
    "ICD10CM/E11.49": "Type 2 diabetes mellitus with other diabetic neurological complication",
    "ICD10CM/E11.51": "Type 2 diabetes mellitus with diabetic peripheral angiopathy without gangrene",
    "ICD10CM/E11.52": "Type 2 diabetes mellitus with diabetic peripheral angiopathy with gangrene",
    "ICD10CM/E11.59": "Type 2 diabetes mellitus with other circulatory complications",
    "ICD10CM/E11.610": "Type 2 diabetes mellitus with diabetic neuropathic arthropathy",
    "ICD10CM/E11.620": "Type 2 diabetes mellitus with diabetic dermatitis",
    "ICD10CM/E11.621": "Type 2 diabetes mellitus with foot ulcer",
    "ICD10CM/E11.622": "Type 2 diabetes mellitus with other skin ulcer",
    "ICD10CM/E11.628": "Type 2 diabetes mellitus with other skin complications",
    "ICD10CM/E11.649": "Type 2 diabetes mellitus with hypoglycemia without coma",
    "ICD10CM/E11.65": "Type 2 diabetes mellitus with hyperglycemia",
    "ICD10CM/E11.8": "Type 2 diabetes mellitus with unspecified complications",
    "ICD10CM/Z79.4": "Long term (current) use of insulin",
    "ICD10CM/L97.419": "Non-pressure chronic ulcer of right heel and midfoot with unspecified severity",
    "ICD10CM/G99.0": "Autonomic neuropathy in diseases classified elsewhere",
    "ICD10CM/H35.81": "Retinal edema",
    "ICD10CM/Z89.421": "Acquired absence of other right toe(s)",
}
#: Cardiorenal disease: heart failure, coronary and valvular disease, atrial fibrillation, congestion.
CARDIORENAL: dict[str, str] = {
    "ICD10CM/I50.1": "Left ventricular failure, unspecified",
    "ICD10CM/I50.20": "Unspecified systolic (congestive) heart failure",
    "ICD10CM/I50.21": "Acute systolic (congestive) heart failure",
    "ICD10CM/I50.22": "Chronic systolic (congestive) heart failure",
    "ICD10CM/I50.23": "Acute on chronic systolic (congestive) heart failure",
    "ICD10CM/I50.30": "Unspecified diastolic (congestive) heart failure",
    "ICD10CM/I50.31": "Acute diastolic (congestive) heart failure",
    "ICD10CM/I50.32": "Chronic diastolic (congestive) heart failure",
    "ICD10CM/I50.33": "Acute on chronic diastolic (congestive) heart failure",
    "ICD10CM/I50.40": "Unspecified combined systolic and diastolic (congestive) heart failure",
    "ICD10CM/I50.42": "Chronic combined systolic and diastolic (congestive) heart failure",
    "ICD10CM/I50.9": "Heart failure, unspecified",
    "ICD10CM/I11.0": "Hypertensive heart disease with heart failure",
    "ICD10CM/I25.10": "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    "ICD10CM/I25.110": "Atherosclerotic heart disease of native coronary artery with unstable angina pectoris",
    "ICD10CM/I25.2": "Old myocardial infarction",
    "ICD10CM/I21.4": "Non-ST elevation (NSTEMI) myocardial infarction",
    "ICD10CM/I48.0": "Paroxysmal atrial fibrillation",
    "ICD10CM/I48.11": "Longstanding persistent atrial fibrillation",
    "ICD10CM/I48.20": "Chronic atrial fibrillation, unspecified",
    "ICD10CM/I48.91": "Unspecified atrial fibrillation",
    "ICD10CM/I42.0": "Dilated cardiomyopathy",
    "ICD10CM/I42.9": "Cardiomyopathy, unspecified",
    "ICD10CM/I35.0": "Nonrheumatic aortic (valve) stenosis",
    "ICD10CM/I34.0": "Nonrheumatic mitral (valve) insufficiency",
    "ICD10CM/I27.20": "Pulmonary hypertension, unspecified",
    "ICD10CM/R60.0": "Localized edema",
    "ICD10CM/R60.1": "Generalized edema",
    "ICD10CM/R06.00": "Dyspnea, unspecified",
    "ICD10CM/R06.02": "Shortness of breath",
    "ICD10CM/Z95.1": "Presence of aortocoronary bypass graft",
    "ICD10CM/Z95.5": "Presence of coronary angioplasty implant and graft",
    "ICD10CM/Z95.0": "Presence of cardiac pacemaker",
    "ICD10CM/I44.7": "Left bundle-branch block, unspecified",
    "ICD10CM/E87.70": "Fluid overload, unspecified",
}
#: Glomerular and autoimmune kidney disease: lupus, vasculitis, nephritic/nephrotic syndromes,
#: proteinuria and haematuria, paraproteins.
GLOMERULAR: dict[str, str] = {
    "ICD10CM/M32.14": "Glomerular disease in systemic lupus erythematosus",
    "ICD10CM/M32.10": "Systemic lupus erythematosus, organ or system involvement unspecified",
    "ICD10CM/M32.19": "Other organ or system involvement in systemic lupus erythematosus",
    "ICD10CM/M32.9": "Systemic lupus erythematosus, unspecified",
    "ICD10CM/M35.00": "Sjogren syndrome, unspecified",
    "ICD10CM/M31.31": "Wegener's granulomatosis with renal involvement",
    "ICD10CM/M31.30": "Wegener's granulomatosis without renal involvement",
    "ICD10CM/M31.7": "Microscopic polyangiitis",
    "ICD10CM/M30.0": "Polyarteritis nodosa",
    "ICD10CM/M34.9": "Systemic sclerosis, unspecified",
    "ICD10CM/N02.8": "Recurrent and persistent hematuria with other morphologic changes",
    "ICD10CM/N02.9": "Recurrent and persistent hematuria with unspecified morphologic changes",
    "ICD10CM/N03.9": "Chronic nephritic syndrome with unspecified morphologic changes",
    "ICD10CM/N04.0": "Nephrotic syndrome with minor glomerular abnormality",
    "ICD10CM/N04.1": "Nephrotic syndrome with focal and segmental glomerular lesions",
    "ICD10CM/N04.9": "Nephrotic syndrome with unspecified morphologic changes",
    "ICD10CM/N05.9": "Unspecified nephritic syndrome with unspecified morphologic changes",
    "ICD10CM/N06.9": "Isolated proteinuria with unspecified morphologic lesion",
    "ICD10CM/R80.0": "Isolated proteinuria",
    "ICD10CM/R80.9": "Proteinuria, unspecified",
    "ICD10CM/R31.9": "Hematuria, unspecified",
    "ICD10CM/R31.29": "Other microscopic hematuria",
    "ICD10CM/D69.0": "Allergic purpura",
    "ICD10CM/D89.1": "Cryoglobulinemia",
    "ICD10CM/B18.2": "Chronic viral hepatitis C",
    "ICD10CM/E85.81": "Light chain (AL) amyloidosis",
    "ICD10CM/E85.9": "Amyloidosis, unspecified",
    "ICD10CM/D47.2": "Monoclonal gammopathy",
    "ICD10CM/R76.8": "Other specified abnormal immunological findings in serum",
    "ICD10CM/R76.0": "Raised antibody titer",
    "ICD10CM/L93.0": "Discoid lupus erythematosus",
    "ICD10CM/Z79.52": "Long term (current) use of systemic steroids",
    "ICD10CM/Z79.899": "Other long term (current) drug therapy",
    "ICD10CM/R77.0": "Abnormality of albumin",
}
#: Obstructive uropathy: hydronephrosis, prostatic enlargement, stones, retention, urinary infection.
OBSTRUCTIVE: dict[str, str] = {
    "ICD10CM/N13.0": "Hydronephrosis with ureteropelvic junction obstruction",
    "ICD10CM/N13.1": "Hydronephrosis with ureteral stricture, not elsewhere classified",
    "ICD10CM/N13.2": "Hydronephrosis with renal and ureteral calculous obstruction",
    "ICD10CM/N13.30": "Unspecified hydronephrosis",
    "ICD10CM/N13.39": "Other hydronephrosis",
    "ICD10CM/N13.4": "Hydroureter",
    "ICD10CM/N13.8": "Other obstructive and reflux uropathy",
    "ICD10CM/N13.9": "Obstructive and reflux uropathy, unspecified",
    "ICD10CM/N40.0": "Benign prostatic hyperplasia without lower urinary tract symptoms",
    "ICD10CM/N40.1": "Benign prostatic hyperplasia with lower urinary tract symptoms",
    "ICD10CM/N40.3": "Nodular prostate with lower urinary tract symptoms",
    "ICD10CM/R33.9": "Retention of urine, unspecified",
    "ICD10CM/R33.8": "Other retention of urine",
    "ICD10CM/R39.11": "Hesitancy of micturition",
    "ICD10CM/R39.14": "Feeling of incomplete bladder emptying",
    "ICD10CM/R39.15": "Urgency of urination",
    "ICD10CM/N20.0": "Calculus of kidney",
    "ICD10CM/N20.1": "Calculus of ureter",
    "ICD10CM/N20.2": "Calculus of kidney with calculus of ureter",
    "ICD10CM/N20.9": "Urinary calculus, unspecified",
    "ICD10CM/N23": "Unspecified renal colic",
    "ICD10CM/N31.9": "Neuromuscular dysfunction of bladder, unspecified",
    "ICD10CM/N32.0": "Bladder-neck obstruction",
    "ICD10CM/C61": "Malignant neoplasm of prostate",
    "ICD10CM/N39.0": "Urinary tract infection, site not specified",
    "ICD10CM/N30.00": "Acute cystitis without hematuria",
    "ICD10CM/N10": "Acute pyelonephritis",
    "ICD10CM/Z87.442": "Personal history of urinary calculi",
    "ICD10CM/Z46.6": "Encounter for fitting and adjustment of urinary device",
    "ICD10CM/R97.20": "Elevated prostate specific antigen [PSA]",
    "ICD10CM/N28.1": "Cyst of kidney, acquired",
    "ICD10CM/R35.1": "Nocturia",
}
#: Codes recorded for men only (DQD plausibleGender): never drawn for women.
MALE_ONLY = frozenset({"ICD10CM/N40.0", "ICD10CM/N40.1", "ICD10CM/N40.3", "ICD10CM/C61", "ICD10CM/R97.20"})
#: The phenotypes in a fixed order (the truth table's ``phenotype_*`` columns follow it).
PHENOTYPES: dict[str, dict[str, str]] = {
    "diabetic_microvascular": DIABETIC_MICROVASCULAR,
    "cardiorenal": CARDIORENAL,
    "glomerular": GLOMERULAR,
    "obstructive": OBSTRUCTIVE,
}

#: Dated medications (RxNorm ingredients): each subject who starts a class takes one of its drugs.
ACE_ARB: dict[str, str] = {
    "RxNorm/29046": "lisinopril",
    "RxNorm/3827": "enalapril",
    "RxNorm/35296": "ramipril",
    "RxNorm/52175": "losartan",
    "RxNorm/69749": "valsartan",
    "RxNorm/83818": "irbesartan",
}
SGLT2: dict[str, str] = {
    "RxNorm/1545653": "empagliflozin",
    "RxNorm/1488564": "dapagliflozin",
    "RxNorm/1373458": "canagliflozin",
}
NSAID: dict[str, str] = {
    "RxNorm/5640": "ibuprofen",
    "RxNorm/7258": "naproxen",
    "RxNorm/3355": "diclofenac",
    "RxNorm/41493": "meloxicam",
    "RxNorm/140587": "celecoxib",
}
#: Other coded records of the world (diagnoses, labs, drugs) with descriptions.
OTHER: dict[str, str] = {
    "ICD10CM/N17.9": "Acute kidney failure, unspecified",
    "ICD10CM/E11.9": "Type 2 diabetes mellitus without complications",
    "ICD10CM/I10": "Essential (primary) hypertension",
    "LOINC/9318-7": "Albumin/Creatinine [Mass Ratio] in Urine",
    "LOINC/30934-4": "Natriuretic peptide B [Mass/volume] in Blood",
    "RxNorm/6809": "metformin",
}


def background_vocabulary(size: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """``size`` background codes and their relative frequencies (Zipf, exponent 1.1), from a fixed
    generator: the same list for every seed. About 70% ICD-10-CM-format diagnoses (no chapter N:
    kidney and urinary codes are the phenotypes' and the task's), 15% CPT-4-format procedures and
    15% RxNorm-format drugs."""
    rng = np.random.default_rng(20261202)
    letters = np.array(list("ABCDEFGHIJKLMRSTZ"))  # no N (kidney), O (pregnancy), P (perinatal), Q
    codes: list[str] = []
    seen: set[str] = set(descriptions())  # never one of the named codes
    n_dx, n_px = int(size * 0.70), int(size * 0.15)
    while len(codes) < n_dx:
        code = f"ICD10CM/{rng.choice(letters)}{rng.integers(0, 100):02d}.{rng.integers(0, 10)}"
        if code not in seen and not _SEX_SPECIFIC.match(code):
            seen.add(code)
            codes.append(code)
    while len(codes) < n_dx + n_px:
        code = f"CPT4/{rng.integers(10021, 99500)}"
        if code not in seen:
            seen.add(code)
            codes.append(code)
    while len(codes) < size:
        code = f"RxNorm/{rng.integers(1000, 2_000_000)}"
        if code not in seen:
            seen.add(code)
            codes.append(code)
    order = rng.permutation(size)  # the frequency rank is independent of the code system
    weights = 1.0 / np.power(np.arange(1, size + 1), 1.1)
    return np.array(codes)[order], weights / weights.sum()


def descriptions() -> dict[str, str]:
    """Every named code of the world with its description (background codes excluded)."""
    named: dict[str, str] = {}
    for table in (*PHENOTYPES.values(), ACE_ARB, SGLT2, NSAID, OTHER):
        named.update(table)
    return named


def local_code(vocabulary: str, code: str) -> str:
    """The site-local source code a health system records in place of the ICD-10-CM ``code``:
    ``vocabulary/NNNNNNNNNN``, a number drawn from the code by SHA-256 (stable, unrelated to the
    ICD string, as a local dictionary's identifiers are). Its description is the ICD code's."""
    number = int.from_bytes(hashlib.sha256(f"{vocabulary}|{code}".encode()).digest()[:8], "big") % 10**10
    return f"{vocabulary}/{number:010d}"
