"""Radiology-report text for a phantom, in the words radiologists use.

A report has a view line, the breast-composition sentence (always), one sentence per drawn
finding, negatives for the main absent findings, and the BI-RADS assessment with a management
recommendation. Every sentence is picked from several phrasings by the seeded generator, so
image-report pairs vary like real ones. Sentences that state a finding never contain "no",
"not" or "without"; negatives always do.
"""

from __future__ import annotations

import re

import numpy as np

from mammodissect.phantom.scene import Finding

__all__ = ["FAMILY_PATTERNS", "write_report"]

#: A regular expression per finding family that matches every sentence naming it.
FAMILY_PATTERNS: dict[str, str] = {
    "mass": r"\bmass",
    "calcification": r"calcification",
    "suspicious_calcification": r"amorphous|pleomorphic|fine.linear|suspicious (?:micro)?calc",
    "architectural_distortion": r"distortion",
    "asymmetry": r"asymmetr",
    "skin_thickening": r"skin thickening|thickened skin|skin\b[^.]*\bthickened",
    "nipple_retraction": r"retract|inverted|inversion",
    "lymph_node": r"lymph node|adenopathy",
    "biopsy_clip": r"\bclip",
    "implant": r"implant",
}

_COMPOSITION = {
    "A": (
        "The breasts are almost entirely fatty.",
        "The breast tissue is almost entirely fatty.",
        "The breasts are composed almost entirely of fat.",
        "Breast composition A: almost entirely fatty.",
    ),
    "B": (
        "There are scattered areas of fibroglandular density.",
        "Scattered fibroglandular densities are present.",
        "The breast tissue shows scattered areas of fibroglandular density.",
        "Breast composition B: scattered areas of fibroglandular density.",
    ),
    "C": (
        "The breasts are heterogeneously dense, which may obscure small masses.",
        "The breast tissue is heterogeneously dense, which may obscure small masses.",
        "Heterogeneously dense breast tissue is present, which could obscure small masses.",
        "Breast composition C: heterogeneously dense, which may obscure small masses.",
    ),
    "D": (
        "The breasts are extremely dense, which lowers the sensitivity of mammography.",
        "The breast tissue is extremely dense, which lowers the sensitivity of mammography.",
        "Extremely dense fibroglandular tissue limits the sensitivity of mammography.",
        "Breast composition D: extremely dense, which lowers the sensitivity of mammography.",
    ),
}

_ASSESSMENT = {
    0: (
        "BI-RADS 0: incomplete, needs additional imaging evaluation.",
        "Recall for additional imaging evaluation. BI-RADS 0.",
        "Incomplete assessment (BI-RADS 0): spot compression views are recommended.",
    ),
    1: (
        "BI-RADS 1: negative. Return to routine annual screening.",
        "Negative mammogram (BI-RADS 1).",
        "No mammographic evidence of malignancy. BI-RADS 1: negative.",
    ),
    2: (
        "BI-RADS 2: benign. Routine annual screening is recommended.",
        "Benign findings (BI-RADS 2).",
        "Benign mammogram, BI-RADS 2. Return to annual screening.",
    ),
    3: (
        "BI-RADS 3: probably benign. A six-month follow-up mammogram is recommended.",
        "Probably benign finding (BI-RADS 3); short-interval follow-up is advised.",
        "BI-RADS 3: probably benign, with less than 2 percent likelihood of malignancy.",
    ),
    4: (
        "BI-RADS 4: suspicious. Biopsy is recommended.",
        "Suspicious abnormality (BI-RADS 4); tissue diagnosis is recommended.",
        "BI-RADS 4: suspicious abnormality. Image-guided biopsy is advised.",
    ),
    5: (
        "BI-RADS 5: highly suggestive of malignancy. Tissue diagnosis is recommended.",
        "Highly suggestive of malignancy (BI-RADS 5); biopsy is recommended.",
        "BI-RADS 5: classic appearance of breast cancer. Biopsy and surgical consultation.",
    ),
    6: (
        "BI-RADS 6: known biopsy-proven malignancy. Surgical consultation is recommended.",
        "Known biopsy-proven malignancy (BI-RADS 6).",
        "BI-RADS 6: known cancer before definitive therapy.",
    ),
}

_MARGIN_WORDS = {
    "circumscribed": ("circumscribed", "well-circumscribed", "sharply defined"),
    "obscured": ("obscured", "partially obscured"),
    "microlobulated": ("microlobulated",),
    "indistinct": ("indistinct", "ill-defined"),
    "spiculated": ("spiculated",),
}
_DENSITY_WORDS = {
    "high": ("high density", "hyperdense"),
    "equal": ("equal density", "isodense"),
    "low": ("low density", "hypodense"),
    "fat-containing": ("fat-containing",),
}
_MORPHOLOGY_WORDS = {
    "punctate": ("punctate",),
    "round": ("round", "small round"),
    "amorphous": ("amorphous", "indistinct amorphous"),
    "fine pleomorphic": ("fine pleomorphic", "pleomorphic"),
    "fine linear branching": ("fine linear branching", "fine-linear branching"),
    "coarse": ("coarse popcorn-like", "coarse"),
    "rim": ("rim", "eggshell"),
    "vascular": ("vascular",),
}


class _Writer:
    """Picks phrasings with one seeded generator."""

    def __init__(self, rng: np.random.Generator, laterality: str) -> None:
        self.rng = rng
        self.side = "left" if laterality == "L" else "right"

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def part(self, region: str | None) -> str:
        """ "the upper left breast", or "the left breast" for central regions."""
        if region in ("upper", "lower", "outer", "inner"):
            return f"the {region} {self.side} breast"
        return f"the {self.side} breast"

    def where(self, attrs: dict) -> str:
        """A location phrase such as "the upper left breast at middle depth"."""
        region, depth, side = attrs.get("region"), attrs.get("depth", "middle"), self.side
        if region == "subareolar":
            return self.pick((f"the {side} subareolar region", f"the {side} retroareolar region"))
        if region == "axillary":
            return self.pick(
                (f"the {side} axillary tail", f"the axillary tail of the {side} breast")
            )
        return self.pick(
            (
                f"the {region} {side} breast at {depth} depth",
                f"the {region} {side} breast, {depth} depth",
                f"the {depth} third of the {region} {side} breast",
            )
        )


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article."""
    vowel = phrase[:1].lower() in "aeiou" or re.match(r"(8|11|18)\b", phrase) is not None
    return ("an " if vowel else "a ") + phrase


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _mass(w: _Writer, f: Finding) -> str:
    a = f.attrs
    shape, size, loc = a["shape"], int(a["size_mm"]), w.where(a)
    margin = w.pick(_MARGIN_WORDS[a["margin"]])
    density = w.pick(_DENSITY_WORDS[a["density"]])
    sentence = w.pick(
        (
            f"There is {_a(f'{size} mm {shape} {density}')} mass with {margin} margins in {loc}.",
            f"{_cap(_a(f'{margin} {shape} {density}'))} mass measuring {size} mm is seen in {loc}.",
            f"In {loc} there is {_a(shape)} {density} mass with {margin} margins, "
            f"approximately {size} mm.",
        )
    )
    if a["density"] == "fat-containing" and w.rng.random() < 0.5:
        sentence += " " + w.pick(
            ("It is typical of a benign fat-containing lesion.", "It has a radiolucent center.")
        )
    return sentence


def _calcifications(w: _Writer, f: Finding) -> str:
    a = f.attrs
    morphology, distribution = a["morphology"], a["distribution"]
    m = w.pick(_MORPHOLOGY_WORDS[morphology])
    if morphology == "vascular":
        return w.pick(
            (
                "Vascular calcifications are noted.",
                "There are scattered vascular calcifications.",
                f"Benign vascular calcifications are present in the {w.side} breast.",
            )
        )
    loc = w.where(a)
    n = f.count
    if morphology in ("coarse", "rim"):
        tail = (
            "typical of a degenerating fibroadenoma"
            if morphology == "coarse"
            else "consistent with an oil cyst"
        )
        if n == 1:
            return f"{_cap(_a(m))} calcification is seen in {loc}, {tail}."
        return w.pick(
            (
                f"There are {n} {m} calcifications in {loc}, {tail}.",
                f"{_cap(m)} calcifications are seen in {loc}, {tail}.",
            )
        )
    if distribution == "grouped":
        return w.pick(
            (
                f"A group of {n} {m} calcifications spanning {int(a['extent_mm'])} mm is seen "
                f"in {loc}.",
                f"There are grouped {m} calcifications in {loc}, spanning "
                f"{int(a['extent_mm'])} mm.",
                f"A cluster of {n} {m} microcalcifications is present in {loc}.",
            )
        )
    if distribution == "linear":
        return w.pick(
            (
                f"{_cap(m)} calcifications in a linear distribution are seen in {loc}.",
                f"There are linear {m} calcifications in {loc}, oriented toward the nipple.",
            )
        )
    if distribution == "segmental":
        return w.pick(
            (
                f"{_cap(m)} calcifications in a segmental distribution occupy {loc}.",
                f"There are segmental {m} calcifications in {loc}, pointing toward the nipple.",
            )
        )
    if distribution == "regional":
        return w.pick(
            (
                f"Regional {m} calcifications are seen in {loc}.",
                f"{_cap(m)} calcifications in a regional distribution are present in {loc}.",
            )
        )
    return w.pick(
        (
            f"Diffuse {m} calcifications are scattered throughout the {w.side} breast.",
            f"There are diffusely distributed {m} calcifications in the {w.side} breast.",
        )
    )


def _distortion(w: _Writer, f: Finding) -> str:
    loc = w.where(f.attrs)
    if f.attrs.get("lucent_center") and w.rng.random() < 0.6:
        return f"Architectural distortion with a radiolucent center is seen in {loc}."
    return w.pick(
        (
            f"There is architectural distortion in {loc}.",
            f"An area of architectural distortion is seen in {loc}.",
            f"Architectural distortion with thin lines radiating from a point is present in {loc}.",
        )
    )


def _asymmetry(w: _Writer, f: Finding) -> str:
    a = f.attrs
    if f.kind == "global asymmetry":
        part = w.part(a.get("region"))
        return w.pick(
            (
                f"There is a global asymmetry in {part}.",
                f"Global asymmetry: more fibroglandular tissue in {part}.",
                f"A global asymmetry of fibroglandular tissue occupies {part}.",
            )
        )
    loc = w.where(a)
    return w.pick(
        (
            f"A focal asymmetry is seen in {loc}.",
            f"There is a focal asymmetry in {loc}, measuring {int(a['size_mm'])} mm.",
            f"Focal asymmetric density in {loc}, with concave borders and interspersed fat.",
        )
    )


def _skin(w: _Writer, f: Finding) -> str:
    a = f.attrs
    thickness = int(max(a["thickness_mm"], 3))
    if a["focal"]:
        part = w.part(a.get("region"))
        return w.pick(
            (
                f"Focal skin thickening over {part}.",
                f"The skin is focally thickened over {part}, measuring {thickness} mm.",
            )
        )
    return w.pick(
        (
            f"Diffuse skin thickening of the {w.side} breast.",
            f"The skin of the {w.side} breast is diffusely thickened, up to {thickness} mm.",
        )
    )


def _nipple(w: _Writer, f: Finding) -> str:
    return w.pick(
        (
            f"The {w.side} nipple is retracted.",
            f"There is retraction of the {w.side} nipple.",
            f"{_cap(w.side)} nipple retraction is noted.",
        )
    )


def _node(w: _Writer, f: Finding) -> str:
    a = f.attrs
    if f.kind == "intramammary lymph node":
        loc = w.where(a)
        return w.pick(
            (
                f"A benign-appearing intramammary lymph node with a fatty hilum is seen in {loc}.",
                f"Intramammary lymph node in {loc}.",
                f"There is a small reniform intramammary lymph node in {loc}.",
            )
        )
    if f.kind == "normal axillary lymph node":
        return w.pick(
            (
                f"A normal axillary lymph node with a fatty hilum is seen in the {w.side} axilla.",
                f"Normal-appearing {w.side} axillary lymph node.",
            )
        )
    size = int(a["size_mm"])
    return w.pick(
        (
            f"An enlarged dense axillary lymph node of {size} mm has lost its fatty hilum.",
            f"Axillary adenopathy: a rounded, dense {size} mm lymph node in the {w.side} axilla.",
        )
    )


def _clip(w: _Writer, f: Finding) -> str:
    if f.attrs.get("in_mass"):
        return w.pick(
            (
                "A biopsy clip is seen within the mass.",
                "A metallic marker clip marks the biopsied mass.",
            )
        )
    loc = w.where(f.attrs)
    return w.pick(
        (
            f"A biopsy clip is present in {loc}.",
            f"A metallic biopsy marker clip is seen in {loc}.",
            f"Post-biopsy marker clip in {loc}.",
        )
    )


def _implant(w: _Writer, f: Finding) -> str:
    kind, position = f.attrs["type"], f.attrs["position"]
    return w.pick(
        (
            f"{_cap(_a(position))} {kind} implant is in place.",
            f"The {w.side} breast is augmented with {_a(position)} {kind} implant.",
            f"{_cap(kind)} breast implant, {position}, intact.",
        )
    )


_SENTENCES = {
    "mass": _mass,
    "calcification": _calcifications,
    "suspicious_calcification": _calcifications,
    "architectural_distortion": _distortion,
    "asymmetry": _asymmetry,
    "skin_thickening": _skin,
    "nipple_retraction": _nipple,
    "lymph_node": _node,
    "biopsy_clip": _clip,
    "implant": _implant,
}


def _negatives(w: _Writer, present: set[str]) -> list[str]:
    out: list[str] = []
    core = {"mass", "suspicious_calcification", "architectural_distortion"}
    if not core & present and w.rng.random() < 0.5:
        out.append(
            w.pick(
                (
                    "No suspicious masses, calcifications or architectural distortion.",
                    "There are no suspicious masses, microcalcifications or areas of "
                    "architectural distortion.",
                    "No dominant mass, suspicious calcifications or architectural distortion.",
                )
            )
        )
    else:
        if "mass" not in present:
            out.append(w.pick(("No suspicious mass.", "There is no dominant mass.", "No mass.")))
        if "suspicious_calcification" not in present:
            out.append(
                w.pick(
                    (
                        "No suspicious calcifications.",
                        "No suspicious microcalcifications.",
                        "There are no suspicious calcifications.",
                    )
                )
            )
        if "architectural_distortion" not in present and w.rng.random() < 0.7:
            out.append(w.pick(("No architectural distortion.", "There is no distortion.")))
    if "asymmetry" not in present and w.rng.random() < 0.5:
        out.append(w.pick(("No focal asymmetry.", "No suspicious asymmetry.")))
    skin, nipple = "skin_thickening" in present, "nipple_retraction" in present
    roll = w.rng.random()
    if not skin and not nipple and roll < 0.35:
        out.append(
            w.pick(
                (
                    "The skin and nipple are unremarkable.",
                    "No skin thickening or nipple retraction.",
                )
            )
        )
    elif roll < 0.6:
        if not skin:
            out.append(w.pick(("No skin thickening.", "The skin is not thickened.")))
        if not nipple:
            out.append(w.pick(("No nipple retraction.", "The nipple is not retracted.")))
    return out


def write_report(
    rng: np.random.Generator,
    view: str,
    laterality: str,
    density: str,
    findings: list[Finding] | tuple[Finding, ...],
    birads: int,
) -> str:
    """Write the report of one image.

    Parameters
    ----------
    rng : numpy.random.Generator
        Picks the phrasings.
    view, laterality, density : str
        ``"CC"``/``"MLO"``, ``"L"``/``"R"``, ``"A"`` to ``"D"``.
    findings : sequence of Finding
        What was drawn (canonical or mirrored: only the descriptors are used).
    birads : int
        The image's overall assessment.

    Returns
    -------
    str
        One paragraph on one line.
    """
    w = _Writer(rng, laterality)
    view_long = "craniocaudal" if view == "CC" else "mediolateral oblique"
    sentences = []
    if rng.random() < 0.85:
        sentences.append(
            w.pick(
                (
                    f"{_cap(w.side)} {view} view.",
                    f"{_cap(w.side)} {view_long} view.",
                    f"Screening mammogram, {w.side} {view}.",
                    f"{view} view of the {w.side} breast.",
                )
            )
        )
    sentences.append(w.pick(_COMPOSITION[density]))
    present = {f.family for f in findings}
    if any(f.family == "suspicious_calcification" for f in findings):
        present.add("calcification")
    for finding in findings:
        sentences.append(_SENTENCES[finding.family](w, finding))
    sentences += _negatives(w, present)
    sentences.append(w.pick(_ASSESSMENT[birads]))
    return " ".join(sentences)
